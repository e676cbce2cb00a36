"""The live web UI's program: renders a catalogue (phase A) until the flag file given as argv[1] exists, then compresses
images (phase B, functions that never ran before), each in short bursts with pauses, like a service. Raises and
handles one chained exception with a note per burst of phase A. Stops when stdin closes."""
import os
import select
import sys


def render_item(i):
    return str(i) * 3


def render_catalog():
    return [render_item(i) for i in range(200)]


def compress_block(i):
    return bytes(i % 256 for _ in range(16))


def compress_images():
    return [compress_block(i) for i in range(200)]


def load_price(key):
    try:
        return {}[key]
    except KeyError as missing:
        error = ValueError(f"no price for {key}")
        error.add_note("the catalogue was rendered without prices")
        raise error from missing


def phase_a():
    render_catalog()
    try:
        load_price("sku-1")
    except ValueError:
        pass


def main():
    flag = sys.argv[1]
    print("phase a", flush=True)
    switched = False
    while not select.select([sys.stdin], [], [], 0.01)[0]:
        if not switched and os.path.exists(flag):
            switched = True
            print("phase b", flush=True)
        if switched:
            compress_images()
        else:
            phase_a()


main()
