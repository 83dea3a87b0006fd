"""With spans not recorded (no exporter), the api skips the OpenTelemetry HTTP middleware but still runs
each request in its caller's trace: the messages it publishes carry the caller's trace id."""

import nats
import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from vibewave.api.app import create_app
from vibewave.api.settings import ApiSettings
from vibewave.contracts.events import REQUESTS_STREAM, RequestEvent, request_subject
from vibewave.runtime.settings import CommonSettings

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize("sampler", [ALWAYS_OFF, None], ids=["not-recorded", "recorded"])
async def test_a_request_publishes_in_its_callers_trace(nats_url, vibewave_home, sampler):
    common = CommonSettings(nats_url=nats_url, home=vibewave_home, log_level="INFO", debug=False, replicas=1)
    app = create_app(ApiSettings.from_env(common), TracerProvider(sampler=sampler))
    headers = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    async with AsyncTestClient(app) as client:
        accepted = await client.post("/api/qwen/generate-async", json={"prompt": "traced"}, headers=headers)
        untraced = await client.post("/api/qwen/generate-async", json={"prompt": "new trace"})
    assert accepted.status_code == untraced.status_code == 202
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subject = request_subject(accepted.json()["request_id"], RequestEvent.SUBMITTED)
        traced = await js.get_last_msg(REQUESTS_STREAM.name, subject)
        subject = request_subject(untraced.json()["request_id"], RequestEvent.SUBMITTED)
        fresh = await js.get_last_msg(REQUESTS_STREAM.name, subject)
    finally:
        await nc.close()
    assert (traced.headers or {})["traceparent"].split("-")[1] == TRACE_ID
    assert (fresh.headers or {})["traceparent"].split("-")[1] not in (TRACE_ID, "0" * 32), "a new trace of its own"
