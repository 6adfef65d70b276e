//! PKCS#11 return values: their names in messages, and which ones mean the sessions (or
//! the module) cannot be trusted any more, or that the token refused the PIN.

use cryptoki::error::{Error as CkError, RvError};

/// The CKR name of a return value (`CKR_GENERAL_ERROR`), or `0x...` for vendor codes.
pub(super) fn ckr_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) | RvError::UnknownErrorCode(code) => format!("0x{code:08X}"),
        other => {
            let camel = format!("{other:?}");
            let mut name = String::with_capacity(camel.len() + 8);
            name.push_str("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

/// `CKR_GENERAL_ERROR in C_Decrypt`, or cryptoki's own message.
pub(super) fn describe(err: &CkError) -> String {
    match err {
        CkError::Pkcs11(rv, function) => format!("{} in C_{function:?}", ckr_name(*rv)),
        other => other.to_string(),
    }
}

pub(super) fn rv_of(err: &CkError) -> Option<RvError> {
    match err {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Errors after which the sessions (or the module) cannot be trusted any more.
pub(super) fn is_fatal(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::DeviceError
            | RvError::DeviceRemoved
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SlotIdInvalid
            | RvError::CryptokiNotInitialized
    )
}

/// Errors that say the PIN is wrong: never retried, so the PIN cannot be locked by retries.
pub(super) fn is_pin_refusal(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::PinIncorrect
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::PinExpired
            | RvError::PinLocked
            | RvError::UserPinNotInitialized
    )
}
