"""The lop-bench streams, one module each (imported lazily through gymnasium's registry)."""
