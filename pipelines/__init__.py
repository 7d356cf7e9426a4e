"""Beam wiring: options, composite PTransforms around ``wit_builder``, one module per stage, the CLI.

Importing this package does not import Beam; each stage module does.
"""
