"""The errors a user's own options cause: `main` reports them in one line, exit code 2, no traceback."""

from __future__ import annotations


class UsageError(ValueError):
    """A bad option value or input list, reported in one line."""


def user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by what the user passed (a missing file, a bad config key, an unknown device)."""
    # imported here, once something failed: importing them up front would load torch for `--help`
    from captioner.backbones import WeightsUnavailableError  # noqa: PLC0415
    from captioner.checkpoint import CheckpointError  # noqa: PLC0415
    from captioner.coco_download import DownloadError  # noqa: PLC0415
    from captioner.coco_eval import ResultsError  # noqa: PLC0415
    from captioner.config import ConfigError  # noqa: PLC0415
    from captioner.data.coco import DatasetError  # noqa: PLC0415
    from captioner.device import DeviceError  # noqa: PLC0415
    from captioner.feature_cache import FeatureCacheError  # noqa: PLC0415
    from captioner.images import ImageLoadError  # noqa: PLC0415
    from captioner.report import ReportError  # noqa: PLC0415

    return (ConfigError, CheckpointError, DatasetError, DownloadError, DeviceError, FeatureCacheError, ImageLoadError,
            ReportError, ResultsError, UsageError, WeightsUnavailableError)
