"""botocore's data loader, asked which services it has about the store's own only.

Before botocore loads a service's model (``Loader.load_service_model``) it
checks the service is one it has data for: ``list_available_services`` lists
every directory of every search path (some 420 services in botocore's own
data) and looks into each for an API version holding the file -- about 850
``listdir`` and 1,700 ``stat`` calls, once for the S3 model and again for its
endpoint rules: ~20 ms of CPU at every command's start.

:class:`ServicesLoader` answers that question for the named services only
(the store's sessions make clients for S3 and, for an assumed role, STS), by
the same rule: a service is available for a type of file if a search path
has a directory of its name with an API version directory holding the file.
Everything else -- search paths, which version is loaded, the files, the
cache -- is botocore's ``Loader``.  A session with this loader knows no other
service (botocore's ``UnknownServiceError``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from botocore.loaders import Loader, instance_cache


class ServicesLoader(Loader):
    """botocore's ``Loader``, listing only ``services`` as available."""

    def __init__(self, services: Iterable[str], **loader_options: Any):
        super().__init__(**loader_options)
        self.services = frozenset(services)

    @instance_cache
    def list_available_services(self, type_name: str) -> list[str]:
        found = set()
        for base in self._potential_locations():
            for service in self.services - found:
                directory = os.path.join(base, service)
                if not os.path.isdir(directory):
                    continue
                if any(self.file_loader.exists(os.path.join(directory, version, type_name))
                       for version in os.listdir(directory)):
                    found.add(service)
        return sorted(found)


def create_loader(services: Iterable[str], search_path_string: str | None = None) -> Loader:
    """As ``botocore.loaders.create_loader`` (``AWS_DATA_PATH``-style extra paths)."""
    if search_path_string is None:
        return ServicesLoader(services)
    paths = [os.path.expanduser(os.path.expandvars(path))
             for path in search_path_string.split(os.pathsep)]
    return ServicesLoader(services, extra_search_paths=paths)
