"""The service's own pages: a search page at / and a learning dashboard at /dashboard, plain
HTML with a little JavaScript, every asset served from static/ (no CDN, no build step)."""
