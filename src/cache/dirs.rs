//! The app's folders, from the OS conventions (XDG on Linux, ~/Library on macOS,
//! %LOCALAPPDATA% on Windows). LYCHEE_CACHE_DIR overrides the cache folder (tests and
//! portable installs use it).

use std::path::PathBuf;

fn project() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", crate::APP_DIR_NAME)
}

/// The cache folder.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LYCHEE_CACHE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    project()
        .map(|p| p.cache_dir().to_path_buf())
        .unwrap_or_else(|| std::env::temp_dir().join(crate::APP_DIR_NAME))
}

/// Where thumbnails are cached.
pub fn thumbnail_dir() -> PathBuf {
    cache_dir().join("thumbnails")
}
