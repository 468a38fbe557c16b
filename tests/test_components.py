"""ctx.action, ctx.fallback and ctx.notification call what the engine registered."""

import pytest

import sagaloop

P, E = "shop", "prd"


async def test_action_fallback_and_notification_inside_steps(tmp_path):
    calls = []
    async with sagaloop.Engine(tmp_path, durability="fast") as engine:
        flaky = {"left": 2}

        async def fetch(input):
            calls.append(("fetch", input))
            if flaky["left"]:
                flaky["left"] -= 1
                raise ConnectionError("try again")
            return {"data": input["id"] * 2}

        def primary(input):
            raise RuntimeError("primary down")

        engine.actions.register("svc", "fetch", fetch)
        engine.fallbacks.define("pay", [primary, lambda input: {"paid_by": "backup", **input}])
        engine.notifications.register("email", lambda **msg: calls.append(("email", msg["to"])) or "sent")

        @engine.workflows.define(product=P, tag="t")
        async def t(ctx):
            data = await ctx.step("fetch", lambda: ctx.action.run(app="svc", event="fetch", input={"id": 21},
                                                                  retries=2))
            paid = await ctx.step("pay", lambda: ctx.fallback.execute(fallback="pay", input={"amount": 5}))
            sent = await ctx.step("mail", lambda: ctx.notification.email(to="a@b.c", subject="hi"))
            return [data, paid, sent]

        result = await engine.workflows.execute(product=P, env=E, tag="t")
    assert result.status == "completed"
    assert result.output == [{"data": 42}, {"paid_by": "backup", "amount": 5}, "sent"]
    assert calls.count(("fetch", {"id": 21})) == 3 and ("email", "a@b.c") in calls


async def test_unknown_action_fails_the_step_with_a_clear_code(tmp_path):
    async with sagaloop.Engine(tmp_path, durability="fast") as engine:
        engine.fallbacks.define("none-work", [lambda i: 1 / 0])

        @engine.workflows.define(product=P, tag="t")
        async def t(ctx):
            await ctx.step("a", lambda: ctx.action.run(app="nope", event="x"))

        @engine.workflows.define(product=P, tag="f")
        async def f(ctx):
            await ctx.step("b", lambda: ctx.fallback.execute(fallback="none-work"))

        r1 = await engine.workflows.execute(product=P, env=E, tag="t")
        r2 = await engine.workflows.execute(product=P, env=E, tag="f")
    assert (r1.error.code, r1.failed_step) == ("action_not_found", "a")
    assert "nope" in r1.error.message
    assert r2.error.code == "fallback_failed" and "ZeroDivisionError" in r2.error.message


def test_register_refuses_what_cannot_be_called(tmp_path):
    engine = sagaloop.Engine(tmp_path)
    with pytest.raises(sagaloop.InvalidArgumentError):
        engine.actions.register("a", "b", "not callable")
    with pytest.raises(sagaloop.InvalidArgumentError):
        engine.fallbacks.define("x", [])
