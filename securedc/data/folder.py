"""The ``folder:DIR`` source: images in class sub-folders (torchvision ``ImageFolder`` layout).

``DIR/train/<class>/*.png`` + ``DIR/test/<class>/*.png`` give the split; otherwise
``DIR/<class>/*.png`` is split with ``seed``: each image goes to test with probability 0.2, by a keyed
hash of its bytes (:func:`securedc.data.split.train_test_split`). All images must have the
same size (no silent resizing). Greyscale files stay one channel when every file is grey.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from securedc.data.bundle import DatasetBundle
from securedc.data.registry import SourceRequest, register_source
from securedc.data.torch_dataset import bundle_from_torch_dataset
from securedc.errors import DataError

__all__ = ["load_image_folder", "FOLDER_TEST_FRACTION"]

FOLDER_TEST_FRACTION = 0.2
"""Expected share held out as test (per example) when ``DIR`` has no ``train``/``test`` sub-folders."""

_GREY = ("1", "L", "LA", "I", "I;16", "F")


def _image_folder(directory: Path) -> Any:
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(str(directory))
    except (FileNotFoundError, OSError) as err:
        raise DataError(f"{directory}: {err}; expected one sub-folder of images per class") from None
    return ds


def _set_mode(datasets: list[Any]) -> None:
    from PIL import Image, UnidentifiedImageError

    modes = set()
    for ds in datasets:
        for path, _ in ds.samples:
            try:
                with Image.open(path) as img:
                    modes.add(img.mode)
            except (OSError, UnidentifiedImageError) as err:
                raise DataError(f"cannot read image {path}: {err}") from None
    mode = "L" if modes <= set(_GREY) else "RGB"

    def loader(path: str) -> Any:
        try:
            with Image.open(path) as img:
                return img.convert(mode)
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"cannot read image {path}: {err}") from None

    for ds in datasets:
        ds.loader = loader


def load_image_folder(directory: str | Path, *, seed: int = 0, name: str | None = None) -> DatasetBundle:
    """Load an image folder as a :class:`DatasetBundle` (see module docstring).

    Raises:
        DataError: directory missing, no class folders, unreadable images, mixed sizes, or
            train/test with different class folders.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise DataError(f"folder: directory {directory} does not exist")
    name = name or f"folder:{directory}"
    source = str(directory.resolve())
    if (directory / "train").is_dir() and (directory / "test").is_dir():
        train, test = _image_folder(directory / "train"), _image_folder(directory / "test")
        if train.classes != test.classes:
            raise DataError(f"{directory}: train classes {train.classes} differ from test classes {test.classes}")
        _set_mode([train, test])
        return bundle_from_torch_dataset(train, test, name=name, classes=train.classes, source=source)
    data = _image_folder(directory)
    _set_mode([data])
    return bundle_from_torch_dataset(data, name=name, classes=data.classes, test_fraction=FOLDER_TEST_FRACTION,
                                     seed=seed, source=source)


@register_source("folder", argument="DIR", description="ImageFolder: DIR/{train,test}/CLASS/*.png or DIR/CLASS/*.png")
def _load(request: SourceRequest) -> DatasetBundle:
    return load_image_folder(request.argument or "", seed=request.seed, name=request.name)
