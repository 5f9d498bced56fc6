"""Helpers shared by the test modules: configurations (``config``), the service in the test
process (``service``) or as a subprocess (``process``), the engine with a fake adapter
(``engine``), the core's side of an adapter in memory (``intake``), databases and their rows
(``database``, ``rows``, ``store_readers``, ``sqlite_faults``), local HTTP servers (``net``),
the platforms' signatures (``signing``), waiting on conditions (``waiting``), Parloa's
OpenAPI spec (``spec_schema``) and the repository's root (``paths``)."""
