import os
import sys
from typing import Any, Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from live_chain import LiveChain, start_live_chain, stop_live_chain  # noqa: E402


@pytest.fixture(scope="session")
def live_chain(tmp_path_factory: Any) -> Iterator[LiveChain]:
    """One in-process 4-validator + 1-observer chain with a settled MSSP program, shared by the tests."""
    chain = start_live_chain(str(tmp_path_factory.mktemp("live-chain")))
    try:
        yield chain
    finally:
        stop_live_chain(chain)
