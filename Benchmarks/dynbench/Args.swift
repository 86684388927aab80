import Foundation

// Command-line parsing shared by every dynbench subcommand.

struct CLIError: Error, CustomStringConvertible { var description: String }

/// `--flag value…` arguments: every flag maps to the values that follow it (none for switches).
struct FlagArgs {
    var values: [String: [String]] = [:]
    /// Printed with `--help` and after argument errors.
    let usage: String

    init(_ args: [String], switches: Set<String>, known: Set<String>, usage: String = trainUsage) throws {
        self.usage = usage
        var i = 0
        while i < args.count {
            let a = args[i]
            guard a.hasPrefix("--") else { throw CLIError(description: "unexpected argument \(a)\n\(usage)") }
            if a == "--help" || a == "-h" { print(usage); exit(0) }
            guard known.contains(a) || switches.contains(a) else {
                throw CLIError(description: "unknown option \(a)\n\(usage)")
            }
            var v: [String] = []
            if !switches.contains(a) {
                while i + 1 < args.count, !args[i + 1].hasPrefix("--") { i += 1; v.append(args[i]) }
                guard !v.isEmpty else { throw CLIError(description: "\(a) needs a value") }
            }
            values[a] = v
            i += 1
        }
    }

    func has(_ k: String) -> Bool { values[k] != nil }
    func string(_ k: String) -> String? { values[k]?.first }
    func string(_ k: String, _ d: String) -> String { string(k) ?? d }
    func required(_ k: String) throws -> String {
        guard let s = string(k) else { throw CLIError(description: "missing \(k)\n\(usage)") }
        return s
    }
    func int(_ k: String, _ d: Int, min: Int = 0) throws -> Int {
        guard let s = string(k) else { return d }
        guard let v = Int(s), v >= min else { throw CLIError(description: "\(k) needs an integer ≥ \(min), got \(s)") }
        return v
    }
    func double(_ k: String, _ d: Double) throws -> Double {
        guard let s = string(k) else { return d }
        guard let v = Double(s), v.isFinite, v >= 0 else { throw CLIError(description: "\(k) needs a number ≥ 0, got \(s)") }
        return v
    }
    func ints(_ k: String, _ d: [Int]) throws -> [Int] {
        guard let v = values[k] else { return d }
        let n = v.compactMap(Int.init)
        guard n.count == v.count, n.allSatisfy({ $0 >= 1 }) else { throw CLIError(description: "\(k) needs positive integers") }
        return n
    }
}

