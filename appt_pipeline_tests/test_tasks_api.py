"""Follow-up tasks through the HTTP service (SPEC §10 tasks, §4.4): the list, complete / skip, and the write
path's ``cancelled`` when the lead books again — real PostgreSQL, the real app on a loopback port."""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from appt_pipeline.domain.vocab import Status
from appt_pipeline.sandbox.server import SimulatorServer
from appt_pipeline.service import ServiceSettings, create_app
from appt_pipeline.store.tokens import create_token
from appt_pipeline.store.write_path import write_observations
from appt_pipeline_tests.helpers import REF, SECRET_KEY, ghl, seed

WS = "tasks_ws"
H = timedelta(hours=1)
D = timedelta(days=1)


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[SimulatorServer]:
    with SimulatorServer(create_app(ServiceSettings(database_url=database_url, secret_key=SECRET_KEY))) as srv:
        yield srv


@pytest.fixture()
def client(server: SimulatorServer, db: sa.Engine) -> Iterator[httpx.Client]:
    seed(db, WS, 2)
    token = create_token(db, WS, "read,book").token
    with httpx.Client(base_url=f"{server.base_url}/api/v1/workspaces/{WS}/leads", timeout=10,
                      headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def _cancel_a_booking(db: sa.Engine, lead: str, key: str) -> None:
    write_observations(db, [ghl(lead, key, start_at=REF + D, ws=WS)], now=REF)
    write_observations(db, [ghl(lead, key, Status.CANCELED, start_at=REF + D, ws=WS)], now=REF + H)


def _tasks(client: httpx.Client, lead: str) -> list[dict[str, Any]]:
    answer = client.get(f"/{lead}/tasks")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["workspace_id"], body["lead_id"]) == (WS, lead)
    return list(body["tasks"])


def test_list_complete_and_repeat(client: httpx.Client, db: sa.Engine) -> None:
    lead = f"{WS}_lead0"
    assert _tasks(client, lead) == []
    _cancel_a_booking(db, lead, "g1")
    (task,) = _tasks(client, lead)
    assert (task["type"], task["status"], task["is_urgent"], task["completed_at"]) == (
        "meeting-canceled", "pending", True, None)
    assert "was canceled" in task["suggested_message"]
    done = client.post(f"/{lead}/tasks/{task['id']}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed" and done.json()["completed_at"] is not None
    again = client.post(f"/{lead}/tasks/{task['id']}/complete")  # a retry answers the task as it is
    assert (again.status_code, again.json()) == (200, done.json())
    refused = client.post(f"/{lead}/tasks/{task['id']}/skip")
    assert (refused.status_code, refused.json()) == (409, {"error": "task_not_pending"})
    assert [t["status"] for t in _tasks(client, lead)] == ["completed"]


def test_skip_and_cancelled_by_a_new_booking(client: httpx.Client, db: sa.Engine) -> None:
    lead = f"{WS}_lead1"
    _cancel_a_booking(db, lead, "g1")
    (first,) = _tasks(client, lead)
    assert client.post(f"/{lead}/tasks/{first['id']}/skip").json()["status"] == "skipped"
    _cancel_a_booking(db, lead, "g2")
    pending = [t for t in _tasks(client, lead) if t["status"] == "pending"]
    assert len(pending) == 1
    write_observations(db, [ghl(lead, "g3", start_at=REF + 3 * D, ws=WS)], now=REF + 2 * H)  # booked again
    tasks = _tasks(client, lead)
    assert sorted(t["status"] for t in tasks) == ["cancelled", "skipped"]
    cancelled = next(t for t in tasks if t["status"] == "cancelled")
    assert client.post(f"/{lead}/tasks/{cancelled['id']}/complete").status_code == 409


def test_unknown_ids_are_404(client: httpx.Client, db: sa.Engine) -> None:
    lead = f"{WS}_lead0"
    _cancel_a_booking(db, lead, "g1")
    (task,) = _tasks(client, lead)
    assert client.get("/nobody/tasks").json() == {"error": "unknown_lead"}
    assert client.post(f"/nobody/tasks/{task['id']}/complete").json() == {"error": "unknown_lead"}
    other = client.post(f"/{WS}_lead1/tasks/{task['id']}/complete")  # the task of another lead
    assert (other.status_code, other.json()) == (404, {"error": "unknown_task"})
    assert client.post(f"/{lead}/tasks/not-a-uuid/complete").status_code == 422


def test_the_timeline_page_lists_the_tasks(client: httpx.Client, server: SimulatorServer, db: sa.Engine) -> None:
    lead = f"{WS}_lead0"
    _cancel_a_booking(db, lead, "g1")
    (task,) = _tasks(client, lead)
    page = httpx.get(f"{server.base_url}/workspaces/{WS}/leads/{lead}/timeline", timeout=10,
                     headers={"Authorization": client.headers["Authorization"]})
    assert page.status_code == 200
    assert f'data-task-id="{task["id"]}" data-task-status="pending"' in page.text
    assert "Meeting canceled" in page.text and "was canceled" in page.text
