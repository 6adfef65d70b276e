//! Vault/OpenBao Transit backend (being written).
