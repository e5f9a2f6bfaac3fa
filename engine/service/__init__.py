"""The long-running service: shared write operations, API-triggered sends, the serve runner and the CLI's client."""

from engine.service.operations import erase_user, purge_events, record_events, register_device, set_consent
from engine.service.trigger import TriggerSpec, send_status, trigger_send

__all__ = ["TriggerSpec", "erase_user", "purge_events", "record_events", "register_device", "send_status",
           "set_consent", "trigger_send"]
