"""Routes of the document bases: `/v1/collections/...` (see `router.py`)."""
