"""The bank: accounts, deposits, withdrawals and transfers, all event-sourced.

Run it with ``micro run samples/bank``. Every command is a rule sheet in rules/ plus a
reducer sheet in reducers/; the models are in models/. A transfer touches two account
streams, so it is carried out by a process (``carry_out_transfer``) reacting to the
``TransferRequested`` event: debit the source, credit the target, and refund the source
if the credit fails. Each step is a command with an idempotency key derived from the
transfer, so a step repeated after a crash changes nothing.
"""

from pydantic import BaseModel, Field

from micro import Micro, RuleViolation
from micro.readmodel import AppliedEvent

micro = Micro(service="bank")
micro.modules.want(["auth"])  # every command needs a login; sign-up and login are served here
auth = micro.modules.get("auth")
for command in ("open account", "deposit", "withdraw", "transfer", "settle transfer"):
    micro.commander.add_command(command)


class ById(BaseModel):
    """A view's query: the id of one account or transfer (published in discovery)."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


class NoQuery(BaseModel):
    pass


def account_balance(query: ById, models) -> dict:
    account = models.account.require(query.id)
    return {"id": account.id, "owner": account.owner, "balance": account.balance}


def list_accounts(query: NoQuery, models) -> list[dict]:
    return [account.model_dump(mode="json") for account in models.account.all()]


def transfer_status(query: ById, models) -> dict:
    return models.transfer.require(query.id).model_dump()


micro.add_view("account balance", account_balance)
micro.add_view("accounts", list_accounts)
micro.add_view("transfer status", transfer_status)


@micro.on_event("TransferRequested")
async def carry_out_transfer(event: AppliedEvent) -> None:
    transfer = event.data
    key = f"transfer-{transfer.id}"

    async def step(command: str, payload: dict, name: str) -> None:
        await micro.act(
            command,
            payload,
            idempotency_key=f"{key}-{name}",
            meta=auth.service_meta(),  # the process acts as the bank itself
        )

    async def settle(outcome: str, reason: str = "", refunded: bool = False) -> bool:
        """Record how the transfer went; False when it already went another way."""
        payload = {"id": transfer.id, "outcome": outcome, "reason": reason, "refunded": refunded}
        try:
            await step("settle transfer", payload, outcome)
        except RuleViolation:
            return False
        return True

    async def refund() -> None:
        await step("deposit", {"id": transfer.source, "amount": transfer.amount}, "refund")

    # Two runs of this process may meet on one transfer (instances race on an event, and a
    # crash replays it), and they may decide differently: the balance moves in between. The
    # transfer's own stream settles each step once, so a run that loses the settle follows
    # the run that won it.
    try:
        await step("withdraw", {"id": transfer.source, "amount": transfer.amount}, "debit")
    except RuleViolation as refused:
        if await settle("failed", str(refused)):
            return
        # another run debited the source meanwhile: carry on as it does
    else:
        if not await settle("debited"):
            await refund()  # another run found the money missing and failed the transfer
            return
    try:
        await step("deposit", {"id": transfer.target, "amount": transfer.amount}, "credit")
    except RuleViolation as refused:
        # Compensate: the money goes back where it came from.
        await refund()
        await settle("failed", str(refused), refunded=True)
        return
    await settle("completed")


if __name__ == "__main__":
    micro.start()
