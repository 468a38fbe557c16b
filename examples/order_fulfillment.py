"""Order fulfilment as a saga: charge the card, reserve stock, ship.

Run it with ``python examples/order_fulfillment.py``. It uses the embedded
default store (a local LMDB directory: ``$SAGALOOP_DATA`` or ``./.sagaloop``)
and shows two orders: one that completes, and one whose shipment fails so
the finished steps roll back in reverse.
"""

from __future__ import annotations

import os
import uuid

import sagaloop

# A pretend outside world, so the compensations have something to undo.
ledger: list[str] = []


async def main() -> None:
    async with sagaloop.Engine(os.environ.get("SAGALOOP_DATA")) as engine:

        @engine.workflows.define(product="shop", tag="order-fulfillment",
                                 options={"rollback_strategy": "reverse_all", "timeout": "5m"},
                                 queries={"progress": lambda ctx: {"done": list(ctx.completed_steps)}})
        async def order_fulfillment(ctx: sagaloop.WorkflowContext) -> dict:
            order = ctx.input

            async def charge() -> dict:
                ledger.append(f"charged {order['amount']:.2f} for {order['order_id']}")
                return {"charge_id": f"ch_{order['order_id']}", "amount": order["amount"]}

            async def refund(charge_result: dict) -> None:
                ledger.append(f"refunded {charge_result['amount']:.2f} ({charge_result['charge_id']})")

            async def reserve() -> dict:
                ledger.append(f"reserved {', '.join(order['items'])}")
                return {"reservation": f"rs_{order['order_id']}"}

            async def release(reservation: dict) -> None:
                ledger.append(f"released {reservation['reservation']}")

            async def ship() -> dict:
                if order.get("address") is None:
                    raise RuntimeError("no shipping address")
                ledger.append(f"shipped to {order['address']}")
                return {"tracking": f"tr_{order['order_id']}"}

            payment = await ctx.step("charge-card", charge, refund, critical=True)
            await ctx.step("reserve-stock", reserve, release)
            await ctx.checkpoint("paid-and-reserved", {"charge_id": payment["charge_id"]})
            shipment = await ctx.step("ship", ship, None, {"retries": 2, "retry_delay": "50ms"})
            ctx.log.info("order shipped", {"tracking": shipment["tracking"]})
            return {"charge_id": payment["charge_id"], "tracking": shipment["tracking"]}

        run_id = uuid.uuid4().hex[:8]
        orders = [
            {"order_id": f"ORD-{run_id}-1", "amount": 99.99, "items": ["SKU-001", "SKU-002"], "address": "1 Main St"},
            {"order_id": f"ORD-{run_id}-2", "amount": 25.00, "items": ["SKU-003"], "address": None},
        ]
        for order in orders:
            ledger.clear()
            result = await engine.workflows.execute(product="shop", env="prd", tag="order-fulfillment",
                                                    input=order, idempotency_key=order["order_id"])
            if result.status == "running":  # blocked on a timer (here: a retry wait); wait for the end
                result = await engine.workflows.result(product="shop", env="prd", workflow_id=result.workflow_id)
            print(f"\norder {order['order_id']}: {result.status} in {result.execution_time} ms")
            print(f"  completed steps : {', '.join(result.completed_steps) or '-'}")
            if result.status == "completed":
                print(f"  output          : {result.output}")
            else:
                print(f"  failed at       : {result.failed_step} ({result.error.message})")
                rb = result.rollback_result
                print(f"  rolled back     : {', '.join(rb.rolled_back_steps) or '-'} (in this order)")
            print("  what happened   :")
            for line in ledger:
                print(f"    - {line}")
            detail = await engine.workflows.step_detail(product="shop", env="prd",
                                                        workflow_id=result.workflow_id, step_tag="ship")
            print(f"  'ship' step     : {detail.status}, {detail.attempts} attempt(s)")
            history = await engine.workflows.history(product="shop", env="prd", workflow_id=result.workflow_id)
            print(f"  history         : {' > '.join(e.type for e in history.events)}")
        print(f"\njournal kept in {engine.path}")


if __name__ == "__main__":
    sagaloop.run(main())
