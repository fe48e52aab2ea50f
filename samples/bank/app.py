"""The bank: accounts, deposits, withdrawals and transfers, all event-sourced.

Run it with ``micro run samples/bank``. Every command is a rule sheet in rules/ plus a
reducer sheet in reducers/; the models are in models/. A transfer touches two account
streams, so it is carried out by a process (``carry_out_transfer``) reacting to the
``TransferRequested`` event: debit the source, credit the target, and refund the source
if the credit fails. Each step is a command with an idempotency key derived from the
transfer, so a step repeated after a crash changes nothing.
"""

from micro import Micro, RuleViolation
from micro.readmodel import AppliedEvent

micro = Micro(service="bank")
micro.modules.want(["auth"])  # every command needs a login; sign-up and login are served here
auth = micro.modules.get("auth")
for command in ("open account", "deposit", "withdraw", "transfer", "settle transfer"):
    micro.commander.add_command(command)


def account_balance(query: dict, models) -> dict:
    account = models.account.require(query["id"])
    return {"id": account.id, "owner": account.owner, "balance": account.balance}


def list_accounts(query: dict, models) -> list[dict]:
    return [account.model_dump(mode="json") for account in models.account.all()]


def transfer_status(query: dict, models) -> dict:
    return models.transfer.require(query["id"]).model_dump()


micro.add_view("account balance", account_balance)
micro.add_view("accounts", list_accounts)
micro.add_view("transfer status", transfer_status)


@micro.on_event("TransferRequested")
async def carry_out_transfer(event: AppliedEvent) -> None:
    transfer = event.data
    key = f"transfer-{transfer.id}"

    async def settle(outcome: str, reason: str = "") -> None:
        await micro.act(
            "settle transfer",
            {"id": transfer.id, "outcome": outcome, "reason": reason},
            idempotency_key=f"{key}-{outcome}",
            meta=auth.service_meta(),  # the process acts as the bank itself
        )

    try:
        await micro.act(
            "withdraw",
            {"id": transfer.source, "amount": transfer.amount},
            idempotency_key=f"{key}-debit",
            meta=auth.service_meta(),  # the process acts as the bank itself
        )
    except RuleViolation as refused:
        await settle("failed", str(refused))
        return
    await settle("debited")
    try:
        await micro.act(
            "deposit",
            {"id": transfer.target, "amount": transfer.amount},
            idempotency_key=f"{key}-credit",
            meta=auth.service_meta(),  # the process acts as the bank itself
        )
    except RuleViolation as refused:
        # Compensate: the money goes back where it came from.
        await micro.act(
            "deposit",
            {"id": transfer.source, "amount": transfer.amount},
            idempotency_key=f"{key}-refund",
            meta=auth.service_meta(),  # the process acts as the bank itself
        )
        await settle("failed", str(refused))
        return
    await settle("completed")


if __name__ == "__main__":
    micro.start()
