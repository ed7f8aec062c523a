"""Persistent state: SQLAlchemy 2 models and the `Database` (SQLite in the data dir, or PostgreSQL).

What crosses the boundary: ORM rows (`Tenant`, `User`, `ApiKey`, `UsageRecord`, `AuditEvent`) inside
`Database.session()`; any failure to reach or lock the database is a `StoreUnavailable`.
"""

from jongleur.store.db import Database, StoreUnavailable
from jongleur.store.models import ApiKey, AuditEvent, Base, Tenant, UsageRecord, User

__all__ = ["ApiKey", "AuditEvent", "Base", "Database", "StoreUnavailable", "Tenant", "UsageRecord", "User"]
