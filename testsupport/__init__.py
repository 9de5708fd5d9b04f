"""What the tests and the benchmarks share, outside the service's own package.

Real servers for a test or a benchmark run (``harness``), the SoundOps world they are
seeded with (``seed``), a fake Meta Graph API (``fake_graph``), webhook and SMTP
receivers (``receivers``), and the test doubles of the service (``scripted``: purgers
that follow a script, a resolver that finds nothing), with ``python -m testsupport.cli``,
the service's command line built with those doubles for tests that start real processes.
``app`` never imports this package (import-linter checks it); it is not installed with
the service.
"""
