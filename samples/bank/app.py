"""The bank: accounts, deposits, withdrawals and transfers, all event-sourced.

Run it with ``micro run samples/bank``.
"""

from micro import Micro

micro = Micro(service="bank")
for command in ("open account", "deposit", "withdraw", "transfer", "settle transfer"):
    micro.commander.add_command(command)


def account_balance(query: dict, models) -> dict:
    account = models.account.require(query["id"])
    return {"id": account.id, "owner": account.owner, "balance": account.balance}


micro.add_view("account balance", account_balance)
micro.add_view(
    "accounts", lambda query, models: [a.model_dump(mode="json") for a in models.account.all()]
)
micro.add_view("transfer status", lambda query, models: models.transfer.require(query["id"]))

if __name__ == "__main__":
    micro.start()
