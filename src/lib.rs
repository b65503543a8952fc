//! shadowgate
pub fn _placeholder() {}
