"""The lexical channel: BM25 over each product's title and attribute text, in tantivy.

Chosen by measurement (benchmarks/lexical_engines.py): tantivy builds 44k titles in about a
second, answers in well under a millisecond at 1M titles, and takes a change in a few
milliseconds without a rebuild; bm25s must rebuild its matrix for every change, and SQLite FTS5
and PostgreSQL score every matching document before sorting, which is slow for common words.

Documents are keyed by their row in the catalog index (service.catalog.index), so the lexical
channel and the FAISS channels name products the same way. The terms come from
service.catalog.tokens and are indexed as they are (tantivy's whitespace tokenizer), so the
catalog and the queries are read by the same Python function. A saved index is a plain
directory inside the index build, checksummed with it; a loaded one is a private working copy,
so changes never touch the build.
"""

from __future__ import annotations

import itertools
import shutil
import string
import tempfile
import threading
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tantivy

from service.catalog.tokens import query_terms, terms, words

ROW, TITLE, OTHER, SPELLING = "row", "title", "other", "spelling"
# Title and attribute text are separate BM25 fields: a long title then does not dilute a short
# attribute value, nor the other way round (attribute queries 0.907 against 0.859 in one field;
# boosting the title helped known-item queries a little and hurt attribute queries more).
FUZZY_MIN_LENGTH = 5  # shorter words have too many neighbours one edit away


class Doc(NamedTuple):
    """What the channel indexes of one product (service.catalog.tokens makes each list)."""

    title: Sequence[str]  # the title's terms (terms)
    other: Sequence[str]  # the attribute and description terms (terms)
    spelling: Sequence[str] = ()  # the title's words as typed (words), for misspelt queries


class OutdatedIndex(Exception):
    """A saved lexical index of an older layout: build it again from the products."""


_LOCKS = (".tantivy-writer.lock", ".tantivy-meta.lock")


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_integer_field(ROW, indexed=True, fast=True)
    for field in (TITLE, OTHER):
        builder.add_text_field(field, tokenizer_name="whitespace", index_option="freq")
    builder.add_text_field(SPELLING, tokenizer_name="whitespace", index_option="basic")
    return builder.build()


def _document(row: int, doc: Doc | tuple[Sequence[str], ...]) -> tantivy.Document:
    doc = Doc(*doc)
    out = tantivy.Document()
    out.add_integer(ROW, int(row))
    out.add_text(TITLE, " ".join(doc.title))
    out.add_text(OTHER, " ".join(doc.other))
    out.add_text(SPELLING, " ".join(doc.spelling))
    return out


class LexicalIndex:
    def __init__(self, workdir: Path) -> None:
        """Open the tantivy index in `workdir`, which this object owns and removes on close."""
        self._workdir = workdir
        self._cleanup = weakref.finalize(self, shutil.rmtree, workdir, ignore_errors=True)
        self._schema = _schema()
        try:
            self._index = tantivy.Index(self._schema, path=str(workdir), reuse=True)
        except ValueError as e:  # "An index exists but the schema does not match."
            self._cleanup()
            raise OutdatedIndex(str(e)) from e
        self._writer: tantivy.IndexWriter | None = None
        self._lock = threading.Lock()  # one writer; searchers are swapped as one reference
        self._searcher = self._index.searcher()

    @classmethod
    def build(cls, docs: Iterable[Doc], rows: Iterable[int] | None = None) -> LexicalIndex:
        """A new index of `docs` (each a product's title terms and other terms), keyed by `rows`
        (default 0, 1, ...)."""
        index = cls(Path(tempfile.mkdtemp(prefix="fusionrank-lexical-")))
        writer = index._index.writer(heap_size=128_000_000, num_threads=1)
        keys: Iterable[int] = rows if rows is not None else itertools.count()
        for row, doc in zip(keys, docs, strict=False):
            writer.add_document(_document(row, doc))
        writer.commit()
        writer.wait_merging_threads()
        index._refresh()
        return index

    @classmethod
    def load(cls, path: Path) -> LexicalIndex:
        """A private working copy of a saved index (the caller has verified its files)."""
        workdir = Path(tempfile.mkdtemp(prefix="fusionrank-lexical-"))
        shutil.copytree(path, workdir, dirs_exist_ok=True)
        return cls(workdir)

    def save(self, dst: Path) -> None:
        """Copy the committed index to `dst` (a new directory inside an artifact being written)."""
        with self._lock:
            if self._writer is not None:  # let merges finish so every file is final
                self._writer.commit()
                self._writer.wait_merging_threads()
                self._writer = None
            shutil.copytree(
                self._workdir, dst, ignore=shutil.ignore_patterns(*_LOCKS, ".tmp*", "*.lock")
            )

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.rollback()
                self._writer = None
        self._cleanup()

    # ---- read side -------------------------------------------------------------------------
    def search(self, text: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The top-n rows for a query's text by BM25, best first: (rows, scores)."""
        return self.search_terms(query_terms(text), n, words(text))

    def search_terms(
        self, query: Sequence[str], n: int, typed: Sequence[str] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """BM25 of the `query` terms over the title and the other text. A `typed` word whose
        term no product has is taken for a typo ("adiads", "prnited"): it counts as the titles'
        most common word one edit away, by BM25, and every title word one edit away adds a
        constant 1 (a swap of two letters is one edit). Measured on misspelt known-item queries
        (benchmarks.hybrid), the two together ranked best: fused NDCG@10 0.820 against 0.814
        for the constant alone and 0.818 for the correction alone."""
        if not query or n <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        searcher, schema, Q = self._searcher, self._schema, tantivy.Query
        known = [t for t in query if _known(searcher, t)]
        clauses = [Q.term_query(schema, field, t) for t in known for field in (TITLE, OTHER)]
        for word in typed:
            if len(word) >= FUZZY_MIN_LENGTH and not set(known).intersection(terms(word)):
                fixed = terms(self._correction(word) or "")
                clauses += [Q.term_query(schema, f, t) for t in fixed for f in (TITLE, OTHER)]
                clauses.append(Q.fuzzy_term_query(schema, SPELLING, word, distance=1))
        if not clauses:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        combined = Q.boolean_query([(tantivy.Occur.Should, c) for c in clauses])
        hits = searcher.search(combined, limit=n, count=False).hits
        if not hits:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        rows = searcher.fast_field_values(ROW, [address for _, address in hits])
        return np.array(rows, np.int64), np.array([score for score, _ in hits], np.float32)

    def _correction(self, word: str) -> str | None:
        """The titles' most common word one edit from `word` (a swap of two letters is one),
        looked up among every such edit as Norvig's corrector does (about 54 per letter)."""
        splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
        edits = {a + b[1:] for a, b in splits if b}
        edits |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
        edits |= {a + c + b[1:] for a, b in splits if b for c in string.ascii_lowercase}
        edits |= {a + c + b for a, b in splits for c in string.ascii_lowercase}
        edits.discard(word)
        freq = {e: self._searcher.doc_freq(SPELLING, e) for e in sorted(edits)}
        best = max(freq, key=freq.__getitem__, default=None)
        return best if best is not None and freq[best] > 0 else None

    def __len__(self) -> int:
        return int(self._searcher.num_docs)

    # ---- write side ------------------------------------------------------------------------
    def upsert(self, row: int, doc: Doc, *, replaces: int | None = None) -> None:
        """Index `row`'s terms (and drop the row it replaces); searchable when this returns."""
        self.upsert_many([(row, doc, replaces)])

    def upsert_many(self, docs: Sequence[tuple[int, Doc, int | None]]) -> None:
        """upsert() for each (row, doc, row it replaces or None), in one commit."""
        with self._lock:
            writer = self._writer_locked()
            for row, doc, replaces in docs:
                if replaces is not None:
                    writer.delete_documents_by_term(ROW, int(replaces))
                writer.add_document(_document(row, doc))
            writer.commit()
            self._refresh()

    def delete(self, row: int) -> None:
        self.delete_many([row])

    def delete_many(self, rows: Sequence[int]) -> None:
        with self._lock:
            writer = self._writer_locked()
            for row in rows:
                writer.delete_documents_by_term(ROW, int(row))
            writer.commit()
            self._refresh()

    def _writer_locked(self) -> tantivy.IndexWriter:
        if self._writer is None:  # small: it takes a product, or a batch of changes, at a time
            self._writer = self._index.writer(heap_size=15_000_000, num_threads=1)
        return self._writer

    def _refresh(self) -> None:
        self._index.reload()
        self._searcher = self._index.searcher()


def _known(searcher: tantivy.Searcher, term: str) -> bool:
    return bool(searcher.doc_freq(TITLE, term) or searcher.doc_freq(OTHER, term))
