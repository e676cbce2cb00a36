"""An object-oriented simulation: bodies with properties and methods, a world stepping them, events."""

import math
import random
import sys
import time


class Vector:
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __add__(self, other):
        return Vector(self.x + other.x, self.y + other.y)

    def scaled(self, factor):
        return Vector(self.x * factor, self.y * factor)

    @property
    def length(self):
        return math.hypot(self.x, self.y)


class Body:
    def __init__(self, position, velocity, mass):
        self.position = position
        self.velocity = velocity
        self.mass = mass
        self.collisions = 0

    def step(self, dt, gravity):
        self.velocity = self.velocity + gravity.scaled(dt)
        self.position = self.position + self.velocity.scaled(dt)
        if self.position.y < 0:
            self.bounce()

    def bounce(self):
        self.position = Vector(self.position.x, -self.position.y)
        self.velocity = Vector(self.velocity.x, -self.velocity.y * 0.9)
        self.collisions += 1

    @property
    def energy(self):
        return 0.5 * self.mass * self.velocity.length ** 2


class World:
    def __init__(self, count, seed):
        rng = random.Random(seed)
        self.bodies = [Body(Vector(rng.uniform(0, 100), rng.uniform(1, 100)),
                            Vector(rng.uniform(-5, 5), rng.uniform(-5, 5)), rng.uniform(1, 10)) for _ in range(count)]
        self.gravity = Vector(0.0, -9.81)

    def step(self, dt):
        for body in self.bodies:
            body.step(dt, self.gravity)

    def report(self):
        return sum(body.energy for body in self.bodies), sum(body.collisions for body in self.bodies)


def main(scale):
    world = World(200, seed=7)
    for _ in range(int(3000 * scale)):
        world.step(0.01)
    energy, collisions = world.report()
    print(round(energy), collisions)


if __name__ == "__main__":
    started = time.process_time()
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
    print("work_cpu_s=%.6f" % (time.process_time() - started), file=sys.stderr)  # bench/run.py: steady state
