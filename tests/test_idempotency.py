"""Retries and idempotency: what is retried and how, idempotency keys, and a
transactional outbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from snippets.idempotency import (
    Account,
    IdempotencyKey,
    OutboxEvent,
    Payment,
    PaymentIn,
    Problem,
    classify,
    create_app,
    create_engine,
    create_session_factory,
    database_error,
    dispatch_outbox,
    forget_old_keys,
    lifespan,
    opposite_transfers,
    pay_and_notify_naive,
    pay_once,
    run_retrying,
    seed_accounts,
    serializable_conflict,
    tag_event,
    tag_event_naive,
    transfer,
    utcnow,
)

Sessions = async_sessionmaker[AsyncSession]
PAY = {"source_id": 1, "target_id": 2, "amount": "30.00"}


@dataclass
class Bank:
    app: FastAPI
    sessions: Sessions
    client: httpx.AsyncClient


@pytest.fixture
async def bank(database_url: str) -> AsyncIterator[Bank]:
    """The page's app on an empty database: Ann and Bo, 100 each."""
    app = create_app(database_url)
    async with lifespan(app):
        await seed_accounts(app.state.sessions)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t"
        ) as client:
            yield Bank(app, app.state.sessions, client)


async def balances(sessions: Sessions) -> dict[int, Decimal]:
    async with sessions() as session:
        rows = await session.scalars(select(Account).order_by(Account.id))
        return {row.id: row.balance for row in rows}


async def payments(sessions: Sessions) -> int:
    async with sessions() as session:
        return await session.scalar(select(func.count(Payment.id))) or 0


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


# Errors worth a retry (PostgreSQL: the races the page shows in its tab)


async def test_without_a_retry_a_deadlock_fails_one_transfer(postgres_url):
    """PostgreSQL only: SQLite queues writers, so they cannot deadlock."""
    app = create_app(postgres_url)
    async with lifespan(app):
        await seed_accounts(app.state.sessions)
        outcomes = await opposite_transfers(app.state.sessions, "no")
        assert outcomes[1] == "ok"
        assert outcomes[0].startswith("40P01 deadlock detected")


async def test_retrying_on_the_same_session_never_succeeds(postgres_url):
    """PostgreSQL only: an aborted transaction refuses every later statement."""
    app = create_app(postgres_url)
    async with lifespan(app):
        await seed_accounts(app.state.sessions)
        deadlock = await opposite_transfers(app.state.sessions, "same session")
        assert deadlock[0].startswith("25P02 current transaction is aborted")
        engine = create_engine(postgres_url)
        serial = await serializable_conflict(engine, "same session")
        assert serial[0].startswith("25P02 current transaction is aborted")
        await engine.dispose()


async def test_run_retrying_finishes_deadlocked_transfers(postgres_url):
    """PostgreSQL only: a real 40P01, retried to success."""
    app = create_app(postgres_url)
    async with lifespan(app):
        await seed_accounts(app.state.sessions)
        outcomes = await opposite_transfers(app.state.sessions, "run_retrying")
        assert outcomes == ["ok", "ok"]
        # both moved 1 each way: balances as they were, no money lost
        assert await balances(app.state.sessions) == {1: 100, 2: 100}


async def test_serializable_conflict_fails_then_retries_to_success(
    postgres_url,
):
    """PostgreSQL only: a real 40001 under SERIALIZABLE, then retried."""
    engine = create_engine(postgres_url)
    app = create_app(postgres_url)
    async with lifespan(app):
        await seed_accounts(app.state.sessions)
        failed = await serializable_conflict(engine, "no")
        assert failed[1] == "ok"
        assert failed[0].startswith("40001 could not serialize access")
        assert await serializable_conflict(engine, "run_retrying") == ["ok", "ok"]
        # 1 then 2 transfers of 1 went through, none twice
        assert await balances(app.state.sessions) == {1: 97, 2: 103}
    await engine.dispose()


async def test_sqlite_busy_is_retried_until_the_lock_is_free(sqlite_url):
    """SQLite only: busy means the busy timeout ran out on the write lock."""
    app = create_app(sqlite_url)
    async with lifespan(app):
        await seed_accounts(app.state.sessions)
    engine = create_engine(sqlite_url, connect_args={"timeout": 0.05})
    sessions = create_session_factory(engine)
    holding, release = asyncio.Event(), asyncio.Event()
    attempts = 0

    async def hold() -> None:
        async with sessions.begin() as session:
            await session.get(Account, 1)
            holding.set()
            await release.wait()

    async def pay(session: AsyncSession) -> Payment:
        nonlocal attempts
        attempts += 1
        if attempts == 3:
            release.set()
        return await transfer(session, 1, 2, Decimal(5))

    holder = asyncio.create_task(hold())
    await holding.wait()
    payment = await run_retrying(sessions, pay, first_delay=0)
    await holder
    assert attempts == 3
    assert payment.id == 1
    assert await balances(sessions) == {1: 95, 2: 105}
    await engine.dispose()


async def test_busy_that_never_clears_gives_up_and_answers_503(sqlite_url):
    """SQLite only: the lock never comes free; the handler says retry later."""
    app = create_app(sqlite_url)
    async with lifespan(app):
        await seed_accounts(app.state.sessions)
    engine = create_engine(sqlite_url, connect_args={"timeout": 0.01})
    sessions = create_session_factory(engine)
    attempts = 0

    async def pay(session: AsyncSession) -> Payment:
        nonlocal attempts
        attempts += 1
        return await transfer(session, 1, 2, Decimal(5))

    async with sessions.begin() as holder:
        await holder.get(Account, 1)  # the write lock, held throughout
        with pytest.raises(OperationalError) as raised:
            await run_retrying(sessions, pay, attempts=3, first_delay=0)
    assert attempts == 3
    assert classify(raised.value, Account.metadata).kind is Problem.BUSY
    reply = await database_error(None, raised.value)  # type: ignore[arg-type]
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "1"
    await engine.dispose()


async def test_a_unique_violation_is_never_retried(bank: Bank):
    attempts = 0

    async def duplicate(session: AsyncSession) -> None:
        nonlocal attempts
        attempts += 1
        session.add(Account(id=1, owner="again", balance=Decimal(0)))
        await session.flush()

    with pytest.raises(IntegrityError):
        await run_retrying(bank.sessions, duplicate, first_delay=0)
    assert attempts == 1


# Idempotency keys


async def test_no_key_runs_every_request(bank: Bank):
    for _ in range(2):
        assert (await bank.client.post("/payments", json=PAY)).status_code == 201
    assert await payments(bank.sessions) == 2
    assert await balances(bank.sessions) == {1: 40, 2: 160}


async def test_same_key_same_json_value_replays_without_paying_again(bank: Bank):
    first = await bank.client.post("/payments", json=PAY, headers=key("k"))
    reordered = '{ "amount" : "30.00",  "target_id": 2, "source_id": 1 }'
    again = await bank.client.post(
        "/payments",
        content=reordered,
        headers={**key("k"), "Content-Type": "application/json"},
    )
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert await payments(bank.sessions) == 1
    assert await balances(bank.sessions) == {1: 70, 2: 130}


async def test_same_key_other_body_is_422_and_changes_nothing(bank: Bank):
    await bank.client.post("/payments", json=PAY, headers=key("k"))
    other = await bank.client.post(
        "/payments", json={**PAY, "amount": "31.00"}, headers=key("k")
    )
    assert other.status_code == 422
    assert other.json() == {"detail": "Idempotency-Key 'k' was used with another body"}
    assert await payments(bank.sessions) == 1


async def test_a_4xx_answer_is_stored_and_replayed_not_run_again(bank: Bank):
    too_much = {**PAY, "amount": "150.00"}
    first = await bank.client.post("/payments", json=too_much, headers=key("k"))
    assert first.status_code == 409
    async with bank.sessions.begin() as session:  # now Ann could pay it
        await session.execute(
            update(Account).where(Account.id == 1).values(balance=1000)
        )
    again = await bank.client.post("/payments", json=too_much, headers=key("k"))
    assert (again.status_code, again.json()) == (409, first.json())
    assert await payments(bank.sessions) == 0
    unknown = {**PAY, "target_id": 99}
    for _ in range(2):
        reply = await bank.client.post("/payments", json=unknown, headers=key("u"))
        assert reply.status_code == 404
    assert await balances(bank.sessions) == {1: 1000, 2: 100}  # undone


async def test_twenty_concurrent_requests_with_one_key_make_one_payment(
    bank: Bank,
):
    replies = await asyncio.gather(
        *(
            bank.client.post("/payments", json=PAY, headers=key("same"))
            for _ in range(20)
        )
    )
    assert {reply.status_code for reply in replies} == {201}
    assert len({reply.json()["id"] for reply in replies}) == 1
    assert await payments(bank.sessions) == 1
    assert await balances(bank.sessions) == {1: 70, 2: 130}


async def test_a_request_that_never_completed_stores_nothing(bank: Bank):
    pay = PaymentIn.model_validate(PAY)

    async def dies_before_the_commit() -> None:
        async with bank.sessions.begin() as session:
            await pay_once(session, "k", pay)
            raise RuntimeError("the process dies before the commit")

    with pytest.raises(RuntimeError):
        await dies_before_the_commit()
    async with bank.sessions() as session:
        assert await session.get(IdempotencyKey, "k") is None
    retry = await bank.client.post("/payments", json=PAY, headers=key("k"))
    assert retry.status_code == 201
    assert await payments(bank.sessions) == 1


@pytest.mark.parametrize(
    "value",
    [b"", b"x" * 256, "caf\u00e9".encode("latin-1"), b"a\tb"],
    ids=["empty", "256 chars", "not ASCII", "control character"],
)
async def test_malformed_keys_are_422(bank: Bank, value: bytes):
    reply = await bank.client.post(
        "/payments", json=PAY, headers=[(b"Idempotency-Key", value)]
    )
    assert reply.status_code == 422
    assert await payments(bank.sessions) == 0


async def test_the_longest_key_is_accepted(bank: Bank):
    reply = await bank.client.post("/payments", json=PAY, headers=key("k" * 255))
    assert reply.status_code == 201


async def test_old_keys_are_forgotten_and_recent_ones_kept(bank: Bank):
    for name in ("old", "new"):
        await bank.client.post("/payments", json=PAY, headers=key(name))
    async with bank.sessions.begin() as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == "old")
            .values(created_at=utcnow() - timedelta(hours=25))
        )
    async with bank.sessions.begin() as session:
        assert await forget_old_keys(session) == 1
    async with bank.sessions() as session:
        keys = (await session.scalars(select(IdempotencyKey.key))).all()
    assert keys == ["new"]


async def test_the_schema_documents_the_key_and_the_answers(bank: Bank):
    schema = (await bank.client.get("/openapi.json")).json()
    post = schema["paths"]["/payments"]["post"]
    header = next(p for p in post["parameters"] if p["in"] == "header")
    assert header["name"] == "Idempotency-Key"
    assert {"201", "404", "409", "422", "503"} <= set(post["responses"])


# The transactional outbox


async def test_naive_send_inside_the_transaction_sends_for_a_rollback(
    bank: Bank,
):
    sent: list[int] = []

    async def send(event_row: OutboxEvent) -> None:
        sent.append(event_row.payload["id"])

    async def rolled_back() -> None:
        async with bank.sessions.begin() as session:
            await pay_and_notify_naive(session, PaymentIn.model_validate(PAY), send)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await rolled_back()
    assert len(sent) == 1
    assert await payments(bank.sessions) == 0


async def test_outbox_sends_nothing_for_a_rollback_and_keeps_a_commit(
    bank: Bank,
):
    sent: list[int] = []

    async def send(event_row: OutboxEvent) -> None:
        sent.append(event_row.payload["id"])

    pay = PaymentIn.model_validate(PAY)

    async def rolled_back() -> None:
        async with bank.sessions.begin() as session:
            await pay_once(session, None, pay)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await rolled_back()
    assert await dispatch_outbox(bank.sessions, send) == 0
    async with bank.sessions.begin() as session:
        reply = await pay_once(session, None, pay)
    # the process could die here: the event waits in its table
    assert sent == []
    assert await dispatch_outbox(bank.sessions, send) == 1
    assert sent == [reply.body["id"]]
    assert await dispatch_outbox(bank.sessions, send) == 0


async def test_a_failed_send_is_sent_again_at_least_once(bank: Bank):
    for _ in range(2):
        await bank.client.post("/payments", json=PAY)
    sent: list[int] = []

    async def flaky(event_row: OutboxEvent) -> None:
        sent.append(event_row.id)
        if len(sent) == 2:
            raise ConnectionError("the mail server went away")

    with pytest.raises(ConnectionError):
        await dispatch_outbox(bank.sessions, flaky)

    async def send(event_row: OutboxEvent) -> None:
        sent.append(event_row.id)

    assert await dispatch_outbox(bank.sessions, send) == 2
    assert sent == [1, 2, 1, 2]  # event 1 twice: receivers de-duplicate by id


async def test_two_dispatchers_never_take_the_same_event(postgres_url):
    """PostgreSQL only: FOR UPDATE SKIP LOCKED (SQLite has one writer)."""
    app = create_app(postgres_url)
    async with lifespan(app):
        await seed_accounts(app.state.sessions)
        sessions = app.state.sessions
        async with sessions.begin() as session:
            for _ in range(2):
                await pay_once(session, None, PaymentIn.model_validate(PAY))
        both_hold_one = asyncio.Barrier(2)
        sent: list[int] = []

        async def send(event_row: OutboxEvent) -> None:
            sent.append(event_row.id)
            await both_hold_one.wait()  # each dispatcher holds its row

        counts = await asyncio.gather(
            dispatch_outbox(sessions, send, batch=1),
            dispatch_outbox(sessions, send, batch=1),
        )
        assert counts == [1, 1]
        assert sorted(sent) == [1, 2]


async def test_a_db_error_in_a_payment_is_classified_not_a_500(bank: Bank):
    async with bank.sessions.begin() as session:
        session.add(Account(id=3, owner="x", balance=Decimal(-1)))
        with pytest.raises(DBAPIError) as raised:
            await session.flush()
    assert classify(raised.value, Account.metadata).kind is Problem.CHECK


# Changing a JSON column


async def test_naive_in_place_json_change_is_not_saved(bank: Bank):
    await bank.client.post("/payments", json=PAY)
    async with bank.sessions.begin() as session:
        await tag_event_naive(session, 1, "vip")
    async with bank.sessions() as session:
        event_row = await session.get_one(OutboxEvent, 1)
        assert "tag" not in event_row.payload


async def test_assigning_a_new_json_value_is_saved(bank: Bank):
    await bank.client.post("/payments", json=PAY)
    async with bank.sessions.begin() as session:
        await tag_event(session, 1, "vip")
    async with bank.sessions() as session:
        event_row = await session.get_one(OutboxEvent, 1)
        assert event_row.payload["tag"] == "vip"
        assert event_row.payload["amount"] == "30.00"  # the rest is kept
