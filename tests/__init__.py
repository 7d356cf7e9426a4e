"""The tests mirror the tree: ``tests/<package path>/test_<module>.py`` tests ``<package path>/<module>.py``
(``tests/beam/test_launcher.py`` -> ``wit_builder/beam/launcher.py``, ``tests/trainer/eval/test_zeroshot.py`` ->
``trainer/eval/zeroshot.py``); ``tests/test_cli.py`` is ``wit_builder/cli.py``; ``tests/test_portability.py``
runs every Beam stage on every runner.

Shared fixtures are defined once, in the ``conftest.py`` of the folder whose tests use them: ``tests/conftest.py``
for several packages (the enwiki sample, WordNet, the photo loader, the static file server, the ``wit probe``
command, the raw shards), ``tests/<package>/conftest.py`` for one package's (stage 2's pool and WAT/WARC builders,
stage 3's pairs files, the trainer's shards and its one tiny checkpoint, the demo's corpus). Helper modules that are
not fixtures: ``hostile_server.py`` (the scripted HTTP server), ``references.py`` (brute-force oracles),
``portability_fixtures.py`` (runners and an in-memory object store); stage 1's dump builders are in
``tests/queries/conftest.py``. ``tests/test_house.py`` checks the import rules of the house.
"""
