"""Child process for the kill -9 test: executes blocks forever, printing each
height once its batch is written."""

import sys

sys.path.insert(0, sys.argv[2])

from node.executor import Executor  # noqa: E402
from node.leveldb_store import LevelDBStore  # noqa: E402
from node.node import genesis_writes  # noqa: E402
from tests.node.chain_helpers import CHAIN, genesis, next_block, transfer  # noqa: E402

executor = Executor(CHAIN, LevelDBStore(sys.argv[1]))
executor.init_genesis(genesis_writes(genesis()), 0)
prev = executor.store.block(executor.height)
while True:
    height = executor.height + 1
    block, cert = next_block(prev, height, [transfer(height)])
    executor.execute(block, cert)
    prev = block
    print(height, flush=True)
