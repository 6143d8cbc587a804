"""The inference engine; the public API is re-exported here."""
