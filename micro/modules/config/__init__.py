"""The ``config`` module: configuration on a NATS KV bucket (``store``), with a typed client
(``client``).

One bucket per namespace (``<namespace>_config``), keeping ``config_history`` values per key.
A key is global (``global.<key>``: every service sees it) or belongs to one service
(``service.<service>.<key>``, which overrides the global one for that service). Values are
JSON.

A service declares its configuration as a pydantic model; at start the client registers
the model's JSON Schema in the bucket (``schema.<service>``), loads the values, and then
follows the bucket live, calling the registered callbacks on each change::

    class BankConfig(BaseModel):
        max_transfer: int = 1000

    config = micro.modules.get("config").use(BankConfig)
    config.on_change(lambda new, old: log.info("limit", limit=new.max_transfer))
    micro.modules.want(["config"])
    ...
    config.value.max_transfer

``ConfigStore.set`` (and ``micro config set``) refuses a value that fails a registered
schema. A value that still reaches a client invalid (set before the schema existed, or
written to the bucket directly) is refused by the client: it keeps its previous
configuration and logs why.
"""

from __future__ import annotations

from micro.modules.config.client import ConfigClient
from micro.modules.config.store import ConfigChange, ConfigEntry, ConfigStore, bucket_name

__all__ = ["ConfigChange", "ConfigClient", "ConfigEntry", "ConfigStore", "bucket_name"]
