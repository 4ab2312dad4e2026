"""securedc — private, robust, audited dataset condensation.

Condense a training set into a few synthetic images per class by minimising a
discrepancy to the real distribution, optionally with a differential-privacy
guarantee (``epsilon``) and an adversarial term (``adv_eps``) (:func:`condense`);
audit, certify and export it or refuse it (:func:`release`); audit a saved release
again (:func:`audit_file`).

Example:
    >>> import securedc
    >>> out = securedc.condense("digits", ipc=1, iterations=2, batch_real=8)
    >>> tuple(out.images.shape)
    (10, 1, 8, 8)
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _distribution_version

try:  # the one version string: pyproject.toml's, as installed
    __version__ = _distribution_version("securedc")
except _PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

from securedc.api import Condensation, as_bundle, build_manifest, build_owner_record, condense  # noqa: E402
from securedc.condenser import Condenser, CondenseResult, ProgressEvent  # noqa: E402
from securedc.config import AdversarialConfig, CondenseConfig, EvalConfig, PrivacyConfig  # noqa: E402
from securedc.errors import (  # noqa: E402
    CertificationError,
    ConfigError,
    DataError,
    PrivacyError,
    SecuredcError,
)
from securedc.export import CondensedSet, load_condensed, save_condensed  # noqa: E402
from securedc.notices import Notice  # noqa: E402
from securedc.owner import owner_path, read_owner_record, write_owner_record  # noqa: E402
from securedc.reaudit import FileAudit, audit_file  # noqa: E402
from securedc.release import Release, release  # noqa: E402

__all__ = [
    "__version__",
    "condense",
    "release",
    "Release",
    "audit_file",
    "FileAudit",
    "Notice",
    "Condensation",
    "Condenser",
    "CondenseResult",
    "ProgressEvent",
    "CondenseConfig",
    "PrivacyConfig",
    "AdversarialConfig",
    "EvalConfig",
    "as_bundle",
    "build_manifest",
    "build_owner_record",
    "load_condensed",
    "save_condensed",
    "CondensedSet",
    "owner_path",
    "read_owner_record",
    "write_owner_record",
    "SecuredcError",
    "ConfigError",
    "DataError",
    "PrivacyError",
    "CertificationError",
]
