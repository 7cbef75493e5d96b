"""What the SDK's modules share: the services (tuneloop.service.app), the same ones the CLI calls.

    services().jobs.get("default-sft-20250101-120000")
"""

from __future__ import annotations


def services():
    """The store and the services over it (the store is opened once per URL per process)."""
    from tuneloop.service.app import open_services

    return open_services()


def job_service():
    return services().jobs
