"""Store: persistence of FHIR resources (SQLite or PostgreSQL) behind repositories and a unit of work."""

from gateway.store.database import Database
from gateway.store.repository import StoredResource
from gateway.store.unit_of_work import DuplicateKey, UnitOfWork

__all__ = ["Database", "DuplicateKey", "StoredResource", "UnitOfWork"]
