"""The archives COCO 2014 and Karpathy's splits come in: where each is fetched from, the size
and checksums it must have, and what unpacking it must produce under the data folder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

COCO_IMAGES_URL = "http://images.cocodataset.org/zips/"
COCO_ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/"
KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/"

DOWNLOADS_DIR = "downloads"
CHUNK_BYTES = 1 << 20

CAPTION_FILES = ("annotations/captions_train2014.json", "annotations/captions_val2014.json")
SPLIT_FILE = "dataset_coco.json"


@dataclass(frozen=True)
class CocoFile:
    """One archive to fetch: where from, what it must be, and what unpacking it must produce.

    `size` (bytes), `md5` and `sha256` are the published values; None means unknown and that
    check is reported as unverified. `provides` are paths relative to root that must exist once
    the archive is unpacked. `flatten`, when given, extracts only members with these base names,
    straight into root (the split archive nests its JSON files in a folder in some copies).
    """

    name: str
    url: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    provides: tuple[str, ...] = ()
    flatten: tuple[str, ...] = ()


# Provenance of the published values (none computed here: this project is built offline).
# - Sizes of train2014.zip, val2014.zip and annotations_trainval2014.zip: the Content-Length that
#   images.cocodataset.org serves, as recorded in several independent public wget/Keras download
#   logs and download scripts.
# - MD5s of the same three: listed identically by several independent public download scripts
#   (Salesforce LAVIS, PaddleNLP, pystiche, ...); annotations' MD5 also equals the S3 ETag of its
#   single-part upload. The COCO site itself publishes no checksums.
# - No SHA-256 is published for any of them: sha256 stays None (reported unverified).
# - caption_datasets.zip: neither size nor checksum is published anywhere we could find, so it
#   is accepted unverified; unpacking still checks that it yields dataset_coco.json.
COCO_FILES: Mapping[str, CocoFile] = MappingProxyType({
    entry.name: entry for entry in (
        CocoFile("annotations_trainval2014.zip", COCO_ANNOTATIONS_URL + "annotations_trainval2014.zip",
                 size=252_872_794, md5="0a379cfc70b0e71301e0f377548639bd", provides=CAPTION_FILES),
        CocoFile("caption_datasets.zip", KARPATHY_URL + "caption_datasets.zip",
                 provides=(SPLIT_FILE,),
                 flatten=(SPLIT_FILE, "dataset_flickr8k.json", "dataset_flickr30k.json")),
        CocoFile("val2014.zip", COCO_IMAGES_URL + "val2014.zip",
                 size=6_645_013_297, md5="a3d79f5ed8d289b7a7554ce06a5782b3", provides=("val2014",)),
        CocoFile("train2014.zip", COCO_IMAGES_URL + "train2014.zip",
                 size=13_510_573_713, md5="0da8c0bd3d6becc4dcb32757491aca88", provides=("train2014",)),
    )
})


class DownloadError(RuntimeError):
    """A file could not be fetched, verified or unpacked; the message names it and says what to do."""


def human_size(size: int | None) -> str:
    """Decimal units, as the COCO site and file managers show them."""
    if size is None:
        return "size not published"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
