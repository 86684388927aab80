/// SIMD8 elementwise kernels over equal-shape tensors.
public enum Elementwise {
    /// a + b
    public static func add(_ a: Tensor, _ b: Tensor) -> Tensor { residualAdd(a, b, activation: .identity) }

    /// a ⊙ b
    public static func mul(_ a: Tensor, _ b: Tensor) -> Tensor {
        binary(a, b) { x, y, d, n in
            var i = 0
            while i + 8 <= n { store8(load8(x + i) * load8(y + i), d + i); i += 8 }
            while i < n { d[i] = x[i] * y[i]; i += 1 }
        }
    }

    /// s · a
    public static func scale(_ a: Tensor, _ s: Float) -> Tensor {
        var y = a
        y.withUnsafeMutableBufferPointer { p in
            let d = p.baseAddress!, n = p.count, sv = SIMD8<Float>(repeating: s)
            var i = 0
            while i + 8 <= n { store8(load8(d + i) * sv, d + i); i += 8 }
            while i < n { d[i] *= s; i += 1 }
        }
        return y
    }

    /// a += b
    public static func addInPlace(_ a: inout Tensor, _ b: Tensor) {
        precondition(a.shape == b.shape, "shape mismatch \(a.shape) vs \(b.shape)")
        b.withUnsafeBufferPointer { bp in
            a.withUnsafeMutableBufferPointer { ap in
                let d = ap.baseAddress!, s = bp.baseAddress!, n = ap.count
                var i = 0
                while i + 8 <= n { store8(load8(d + i) + load8(s + i), d + i); i += 8 }
                while i < n { d[i] += s[i]; i += 1 }
            }
        }
    }

    /// act(a + b): the residual join of a ResNet block.
    public static func residualAdd(_ a: Tensor, _ b: Tensor, activation: Activation) -> Tensor {
        binary(a, b) { x, y, d, n in
            var i = 0
            while i + 8 <= n { store8(load8(x + i) + load8(y + i), d + i); i += 8 }
            while i < n { d[i] = x[i] + y[i]; i += 1 }
            activation.apply(d, count: n)
        }
    }

    static func binary(_ a: Tensor, _ b: Tensor,
                       _ kernel: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) -> Tensor {
        precondition(a.shape == b.shape, "shape mismatch \(a.shape) vs \(b.shape)")
        return a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                Tensor(shape: a.shape) { d in kernel(ap.baseAddress!, bp.baseAddress!, d.baseAddress!, d.count) }
            }
        }
    }
}

extension Ops {
    /// act(a + b), equal shapes.
    public static func add(_ a: Tensor, _ b: Tensor, activation: Activation = .identity) -> Tensor {
        Elementwise.residualAdd(a, b, activation: activation)
    }
}

extension Reference {
    public static func add(_ a: Tensor, _ b: Tensor, activation: Activation = .identity) -> Tensor {
        Reference.activation(a.zipMap(b, +), activation)
    }
    public static func mul(_ a: Tensor, _ b: Tensor) -> Tensor { a.zipMap(b, *) }
    public static func scale(_ a: Tensor, _ s: Float) -> Tensor { a.map { $0 * s } }
}
