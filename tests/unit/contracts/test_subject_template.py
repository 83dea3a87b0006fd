"""Span names come from subject templates: ids are replaced, the rest of the subject is kept."""

from __future__ import annotations

import pytest

from vibewave.contracts.events import (
    DEMAND_SUBJECT,
    dead_letter_subject,
    dispatch_subject,
    pod_subject,
    request_subject,
    subject_template,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("subject", "template"),
    [
        (request_subject("req-5f3a", "submitted"), "vw.req.{request_id}.submitted"),
        (request_subject("req-5f3a", "attempt_failed"), "vw.req.{request_id}.attempt_failed"),
        (dispatch_subject("pod-abc123"), "vw.dispatch.{pod_id}"),
        (pod_subject("pod-abc123", "ready"), "vw.pod.{pod_id}.ready"),
        (DEMAND_SUBJECT, DEMAND_SUBJECT),
        (dead_letter_subject("scheduler"), "vw.dlq.scheduler"),
        ("vw.rpc.pods.list", "vw.rpc.pods.list"),
        ("_INBOX.Kq9x2.7", "_INBOX"),
        ("$KV.requests.req-5f3a", "$KV.requests.req-5f3a"),
    ],
)
def test_ids_become_placeholders(subject: str, template: str) -> None:
    assert subject_template(subject) == template
