"""The smallest micro service: run it with ``micro run samples/simplest``."""

from micro import Micro

micro = Micro(service="simplest")
micro.add("multiply two numbers", lambda req: req["first"] * req["second"])

if __name__ == "__main__":
    micro.start()
