"""Infrastructure shared by all packages of the toolkit.

`biophys` (simulation), `elmnet` (models), `surrogate` (fitting) and `benchmarks`
(measurement) each import from here, never from each other in the wrong direction:
errors for bad input, the user cache, verified downloads, atomic writes and run
provenance live in one place each.
"""

__version__ = "0.1.0"
