# fusionrank: one image for the API replicas, the learner and ingest (the command picks which).
# docker compose up: see compose.yaml and the README's "Replicas" section.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    FUSIONRANK_DATA_DIR=/data

# The CPU build of torch: PyPI's default wheel for Linux carries CUDA (several GB).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY alembic/ alembic/
COPY service/ service/
COPY learner/ learner/
COPY model/ model/
COPY storage/ storage/
COPY demo/ demo/
# Editable, so that the schema migrations in /app/alembic are found next to the code.
RUN pip install -e . \
    && useradd --create-home --uid 10001 fusionrank \
    && mkdir -p /data && chown fusionrank /data
USER fusionrank
VOLUME /data
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1

ENTRYPOINT ["fusionrank"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
