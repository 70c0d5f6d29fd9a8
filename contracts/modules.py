"""Imports every contract module so that each registers its handlers in
`contracts.engine.REGISTRY`. Add a new module here, and only here."""

from contracts import transfer  # noqa: F401
from contracts import governance  # noqa: F401
from contracts import providers  # noqa: F401
from contracts import attribution  # noqa: F401
from contracts.payments import programs, bundles, capitation, disputes, tokens  # noqa: F401  (Contracts II)
from contracts import costs  # noqa: F401,E402
from contracts import tcoc  # noqa: F401,E402  (Contracts II: TCOC from attribution)
from contracts import quality  # noqa: F401,E402
from contracts import risk  # noqa: F401,E402
from contracts import benefits  # noqa: F401,E402  (Contracts II)
