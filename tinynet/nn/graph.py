"""The graph a model runs: symbolic tensors while building, a flat program while running.

Building (the functional API): nn.Input(shape) is a symbolic Tensor; calling a layer on
Tensors checks the shapes (so mistakes show at build time) and returns new Tensors that
remember the call. Model(inputs, outputs) walks back from the outputs and orders the calls.

Running: a Program is a list of calls (layer, input slots, output slots) over numbered
value slots, the model inputs first. forward runs the calls in order and keeps each
layer's cache on a tape; backward walks the tape in reverse, adding the gradients of every
use of a slot (branches) and letting shared layers add up their weight gradients. There is
no general autograd engine: a layer's backward is written next to its forward.
"""

import numpy as np

from tinynet.nn._arrays import shape_text


class Tensor:
    """A symbolic value: a shape (None where unknown until data arrives) and where it
    comes from (the call that produced it, or none for an Input)."""

    __slots__ = ("shape", "dtype", "call", "name")

    def __init__(self, shape, dtype, call=None, name=None):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.call = call
        self.name = name

    def __repr__(self):
        origin = f"output of {self.call.layer.label}" if self.call else f"Input {self.name or ''}"
        return f"<Tensor {shape_text(self.shape)} {origin}>"


class Call:
    """One use of a layer in a graph."""

    __slots__ = ("layer", "inputs", "outputs")

    def __init__(self, layer, inputs):
        self.layer = layer
        self.inputs = inputs
        self.outputs = []


def Input(shape, dtype=None, name=None):
    """A model input: `shape` without the batch axis, e.g. Input((150,), dtype='int64') for
    token ids or Input((100, 1)) for a one-channel series. dtype None: the model's float dtype."""
    if isinstance(shape, int):
        shape = (shape,)
    return Tensor((None,) + tuple(shape), None if dtype is None else np.dtype(dtype), name=name)


def symbolic_call(layer, inputs):
    """layer(inputs) on Tensors: check shapes, record the call, return the output Tensor(s)."""
    for t in inputs:
        if not isinstance(t, Tensor):
            layer.fail(f"got a mix of symbolic tensors and arrays ({type(t).__name__}); inside "
                       "a graph every input must come from nn.Input or another layer")
    shapes = [t.shape for t in inputs]
    out = layer.output_shape(shapes if layer.takes_list else shapes[0])
    call = Call(layer, inputs)
    out_shapes = out if layer.n_outputs > 1 else [out]
    call.outputs = [Tensor(s, None, call) for s in out_shapes]
    return tuple(call.outputs) if layer.n_outputs > 1 else call.outputs[0]


class Program:
    """Calls over numbered slots: slots 0..n_inputs-1 are the model inputs."""

    def __init__(self, n_inputs, steps, output_slots, n_slots):
        self.n_inputs = n_inputs
        self.steps = steps                  # [(layer, input slots, output slots)]
        self.output_slots = output_slots
        self.n_slots = n_slots
        self._needs_key = self._needs = None     # see _needs_grad

    @classmethod
    def from_graph(cls, inputs, outputs):
        slot = {id(t): k for k, t in enumerate(inputs)}
        ordered = []
        seen = set()

        def visit(tensor):
            if id(tensor) in slot and tensor.call is None:
                return
            if tensor.call is None:
                raise ValueError(f"the graph uses {tensor!r}, which is not among the model's "
                                 "inputs: pass it in Model(inputs=[...])")
            call = tensor.call
            if id(call) in seen:
                return
            for t in call.inputs:
                visit(t)
            seen.add(id(call))
            ordered.append(call)

        for t in outputs:
            visit(t)
        steps = []
        for call in ordered:
            ins = tuple(slot[id(t)] for t in call.inputs)
            outs = []
            for t in call.outputs:
                slot[id(t)] = len(slot)
                outs.append(slot[id(t)])
            steps.append((call.layer, ins, tuple(outs)))
        return cls(len(inputs), steps, [slot[id(t)] for t in outputs], len(slot))

    @classmethod
    def chain(cls, layers):
        steps = [(layer, (k,), (k + 1,)) for k, layer in enumerate(layers)]
        return cls(1, steps, [len(layers)], len(layers) + 1)

    def layers(self):
        """Each layer once, in the order of its first use."""
        found = []
        for layer, _, _ in self.steps:
            if not any(layer is f for f in found):
                found.append(layer)
        return found

    def sole_output_layer(self):
        """The layer whose call makes the model's single output when no other call reads
        that value (so a loss may hand it a fused gradient); else None."""
        if len(self.output_slots) != 1:
            return None
        slot = self.output_slots[0]
        makers = [layer for layer, _, outs in self.steps if outs == (slot,)]
        readers = [layer for layer, ins, _ in self.steps if slot in ins]
        return makers[0] if makers and not readers else None

    def check_shapes(self, input_shapes):
        """Run every layer's shape check on whole-data shapes, so that a mistake is reported
        with the shapes the user passed, before any batch is cut from them."""
        shapes = [None] * self.n_slots
        shapes[:self.n_inputs] = [tuple(s) for s in input_shapes]
        for layer, ins, outs in self.steps:
            out = layer.output_shape([shapes[s] for s in ins] if layer.takes_list
                                     else shapes[ins[0]])
            for s, shape in zip(outs, out if len(outs) > 1 else [out]):
                shapes[s] = tuple(shape)
        return [shapes[s] for s in self.output_slots]

    def forward(self, inputs, lengths=None):
        """Model outputs and the tape (one cache per call). lengths (each sequence's valid
        steps) goes to every layer that takes it (the LSTMs)."""
        values = [None] * self.n_slots
        values[:self.n_inputs] = inputs
        tape = []
        for layer, ins, outs in self.steps:
            if layer.takes_lengths:
                y, cache = layer.forward(values[ins[0]], lengths)
            else:
                y, cache = layer.forward([values[s] for s in ins] if layer.takes_list
                                         else values[ins[0]])
            if len(outs) == 1:
                values[outs[0]] = y
            else:
                for s, v in zip(outs, y):
                    values[s] = v
            tape.append(cache)
        return [values[s] for s in self.output_slots], tape

    def _needs_grad(self, input_grads):
        """Per slot: does anything before it (a model input, a trainable weight) want a
        gradient? Cached for the current trainable flags."""
        key = (input_grads,) + tuple(p.trainable for layer, _, _ in self.steps
                                     for p in layer._params)
        if key != self._needs_key:
            needs = [input_grads] * self.n_inputs + [False] * (self.n_slots - self.n_inputs)
            for layer, ins, outs in self.steps:
                flag = any(needs[s] for s in ins) or any(p.trainable for p in layer._params)
                for s in outs:
                    needs[s] = flag
            self._needs_key, self._needs = key, needs
        return self._needs

    def backward(self, tape, output_grads, input_grads=False):
        """Add every trainable weight's gradient into Parameter.grad. A call is skipped when
        no gradient reaches it or when nothing before it (input or weight) needs one.
        Returns the gradients of the model inputs when input_grads, else None."""
        needs = self._needs_grad(input_grads)
        grads = [None] * self.n_slots
        for s, g in zip(self.output_slots, output_grads):
            if g is not None:
                grads[s] = g if grads[s] is None else grads[s] + g
        for (layer, ins, outs), cache in zip(reversed(self.steps), reversed(tape)):
            if not needs[outs[0]]:
                continue
            if len(outs) == 1:
                douts = grads[outs[0]]
                if douts is None:
                    continue
            else:
                douts = [grads[s] for s in outs]
                if all(g is None for g in douts):
                    continue
            dins = layer.backward(cache, douts)
            for s, g in zip(ins, dins) if layer.takes_list else ((ins[0], dins),):
                if g is not None and needs[s]:
                    grads[s] = g if grads[s] is None else grads[s] + g
        return grads[:self.n_inputs] if input_grads else None
