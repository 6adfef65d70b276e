//! End-to-end tests live in `tests/`: each starts the real binaries over real HTTPS and
//! drives them with independent clients (reqwest + aws-sigv4, curl, botocore).
