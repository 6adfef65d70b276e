//! PKCS#11 backend (being written).
