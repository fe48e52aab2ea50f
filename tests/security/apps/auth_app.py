"""The auth module as a service of its own: sign-up, login, and the auth streams."""

from micro import Micro

micro = Micro(service="auth")
micro.modules.want(["auth"])
micro.modules.get("auth")

if __name__ == "__main__":
    micro.start()
