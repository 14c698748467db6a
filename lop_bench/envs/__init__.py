"""The lop-bench streams, one module each, each ending with its declaration (``SPEC``, a
:class:`~lop_bench.streams.StreamSpec`); :mod:`lop_bench.registration` registers them when
``lop_bench`` is imported."""
