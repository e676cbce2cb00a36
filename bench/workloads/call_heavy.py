"""Call-heavy workload: small pure-Python functions called millions of times (the shim's worst case)."""


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class Vector:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def add(self, other):
        return Vector(self.x + other.x, self.y + other.y)

    def norm2(self):
        return self.x * self.x + self.y * self.y


def vectors(count):
    total = Vector(0, 0)
    for i in range(count):
        total = total.add(Vector(i, -i))
    return total.norm2()


if __name__ == "__main__":
    print(fib(27), vectors(400_000))
