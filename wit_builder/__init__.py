"""The WIT builder's library: pure functions and small classes, no Beam imports."""
