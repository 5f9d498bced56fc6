"""Benchmarks of parloa-bridge against local fakes (issue #7).

``python -m bench.run [--quick]`` runs the whole bridge as a real process with a real TOML
configuration against a fake Telegram Bot API (long polling), a signed Slack Events sender and
the TextchatV2 simulator as Parloa, plus two reference bots, and prints a table. See
``docs/benchmarks.md`` for the results and how to read them.

Modules:

* :mod:`bench.fakes` — the fakes process (fake Bot API, simulator, fake Slack, control API);
* :mod:`bench.workloads` — the load drivers that run inside the fakes process;
* :mod:`bench.references` — the two reference bots (python-telegram-bot, bare forwarder);
* :mod:`bench.systems` — starting the systems under test: bridge processes and their
  configuration and databases (including seeding stored conversations), reference processes;
* :mod:`bench.report` — the table and the markdown;
* :mod:`bench.run` — the command that runs it all;
* :mod:`bench.profile` — py-spy profile of the bridge under the throughput workload.
"""
