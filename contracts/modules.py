"""Imports every contract module so that each registers its handlers in
`contracts.engine.REGISTRY`. Add a new module here, and only here."""

from contracts import transfer  # noqa: F401
