"""The token contract: its Vyper source and the compiled artifact shipped beside it.

At run time only the artifact (``contract/LedgerToken.json``: ABI and
bytecode) is read, so the ``chain`` extra needs web3 and no compiler.
``build_artifact`` recompiles the source with vyper (a development
dependency, pinned so the build is reproducible); a test checks that the
shipped artifact is byte-identical to a fresh build. To change the contract,
edit the source and run ``python -m tokenledger.chain.artifact``.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "ARTIFACT_NAME",
    "CONTRACT_NAME",
    "SOURCE_NAME",
    "VYPER_VERSION",
    "artifact_text",
    "build_artifact",
    "load_artifact",
    "source_text",
]

CONTRACT_NAME = "LedgerToken"
SOURCE_NAME = f"{CONTRACT_NAME}.vy"
ARTIFACT_NAME = f"{CONTRACT_NAME}.json"
VYPER_VERSION = "0.4.3"  # the compiler the artifact was built with (pinned in the dev extra)


def _contract_file(name: str) -> Any:
    return resources.files("tokenledger.chain").joinpath("contract", name)


def source_text() -> str:
    """The contract's Vyper source, as shipped in the package."""
    return str(_contract_file(SOURCE_NAME).read_text(encoding="utf-8"))


def artifact_text() -> str:
    """The shipped artifact file, exactly as stored."""
    return str(_contract_file(ARTIFACT_NAME).read_text(encoding="utf-8"))


@cache
def load_artifact() -> dict[str, Any]:
    """The shipped artifact: ``abi`` (a list), ``bytecode`` (0x-hex) and provenance."""
    document: dict[str, Any] = json.loads(artifact_text())
    return document


def build_artifact() -> str:
    """Compile the source with vyper; the artifact file's text (deterministic).

    Raises:
        ImportError: vyper is not installed (it is in the ``dev`` extra).
        RuntimeError: the installed vyper is not the pinned version.
    """
    import vyper  # noqa: PLC0415 -- a development dependency, never needed at run time

    if vyper.__version__.split("+")[0] != VYPER_VERSION:
        raise RuntimeError(
            f"the artifact is built with vyper {VYPER_VERSION}, not {vyper.__version__}"
        )
    source = source_text()
    output = vyper.compile_code(source, output_formats=["abi", "bytecode"])
    document = {
        "contract": CONTRACT_NAME,
        "compiler": f"vyper {VYPER_VERSION}",
        "source_sha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
        "abi": output["abi"],
        "bytecode": output["bytecode"],
    }
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover -- the maintainer's rebuild step
    _contract_file(ARTIFACT_NAME).write_text(build_artifact(), encoding="utf-8")
