"""Encrypted, tamper-evident audit log: RFC 9162 Merkle trees and C2SP signed checkpoints."""
