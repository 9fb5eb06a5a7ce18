"""Where on a host the image a volume starts from is, as a libvirt volume to clone: the image's
own file for a host that shares our images directory, its checked copy in a pool host's pool."""
from __future__ import annotations

from src.config import Config
from src.database.db import Database
from src.services.hosts.registry import Host
from src.services.images.catalog import ImageService
from src.services.images.copies import ImageCopies
from src.services.volumes.layers import Source


class SourceFinder:
    def __init__(self, db: Database, config: Config, images: ImageService,
                 installation_id: str) -> None:
        self._db = db
        self._config = config
        self._images = images
        self._installation_id = installation_id

    def of(self, host: Host, image_id: str) -> Source:
        """Raises: ImageNotFound, ValueError (a bad copy), HypervisorError."""
        image = self._images.get(image_id)
        pools = host.hypervisor.pools
        if host.row.storage == "pool":
            copies = ImageCopies(self._db, host.name, pools, host.row.storage_pool)
            return Source(host.row.storage_pool,
                          copies.volume_of(image.id, image.format, image.sha256,
                                           self._images.path_of(image.file)))
        pool = pools.dir_pool(f"iaas-images-{self._installation_id[:8]}",
                              str(self._config.images_dir))
        return Source(pool, image.file)
