//! Entry points for the fuzz targets (not a stable API). Each must return without panicking
//! on any input.

/// Batch-add lines.
pub fn batch_lines(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::registry::parse_batch_lines(s);
    }
}

/// CSV/TSV table exports.
pub fn csv(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::registry::parse_csv(s);
    }
}

/// The TOML registry file.
pub fn registry_toml(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::registry::parse_toml(s);
    }
}

/// The JSON registry file.
pub fn registry_json(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::registry::parse_json(s);
    }
}

/// One message from the results list.
pub fn result_message(data: &[u8]) {
    let _ = crate::ingest::parse_message(data, ubackup_messages::MAX_MESSAGE_BYTES);
}
