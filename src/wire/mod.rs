//! The wire format: every message two nodes exchange, and the frame codec.
//!
//! Pure and total: any byte string decodes to a message or a `WireError`,
//! never a panic, and never an allocation larger than the caps below, whatever
//! length a peer claims. No IO here.
//!
//! A frame is an 8-byte big-endian body length, then the body:
//! `[u32 BE json_len][zlib-compressed JSON][raw payload]`. The JSON carries
//! the message; the raw payload carries file bytes, deltas and signatures so
//! they cost no base64 and no compressor time. Discovery datagrams are
//! separate (`Announce`): plain JSON, one per UDP packet.

mod compat;
mod dialect;
mod entry;
mod path;

pub mod pieces;
pub mod version;
mod xattrs;
pub use compat::{common_version, MAX_LINK_TARGET, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION};
pub use dialect::COMPACT;
use entry::is_zero;
pub use entry::{ChildDigest, Entry, Hash, Kind, NodeId, WantedHash};
pub use path::{temp_name, temp_name_device, PathError, RelPath, MAX_COMPONENT_LEN, MAX_DEPTH, MAX_PATH_LEN, STATE_DIR_NAME, TEMP_PREFIX};
pub use version::Vector;
pub use xattrs::{Xattrs, MAX_XATTRS_TOTAL, MAX_XATTR_VALUE, XATTR_NAMESPACE};

use flate2::{read::ZlibDecoder, write::ZlibEncoder, Compression};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// Largest frame body accepted (payload chunks are at most `MAX_PAYLOAD`).
pub const MAX_FRAME: u64 = 17 * 1024 * 1024;
/// Largest raw payload in one frame: one delta segment, with room for its
/// framing, or one chunk of a whole file.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024 + 64 * 1024;
/// Largest decompressed JSON accepted (a zlib bomb stops here).
pub const MAX_JSON: usize = 8 * 1024 * 1024;
/// Most entries in one `Index`/`Update` message, and wants in one `Want`.
pub const MAX_ENTRIES: usize = 4096;
/// Largest discovery datagram.
pub const MAX_DATAGRAM: usize = 1024;
/// Bytes before the body: the big-endian length.
pub const LEN_PREFIX: usize = 8;

/// A file a node asks a peer for, whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WantFile {
    pub path: RelPath,
    pub hash: WantedHash,
}

/// One file of a `Files` frame: its path, and how many bytes of the
/// payload are its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHead {
    pub path: RelPath,
    pub size: u64,
}

/// The largest file sent in a `Files` frame: larger ones go as
/// `FileStart`, `Chunk`s and `FileEnd`, where three frames cost little.
pub const MAX_BATCHED_FILE: u64 = 64 * 1024;

/// How the content after a `FileStart` is encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ContentMode {
    /// `Chunk`s of raw file bytes, in order, `entry.size` bytes in all.
    Full,
    /// One `Chunk` per segment of `crate::fs::delta::SEGMENT` bytes of the new
    /// file, each a fast_rsync delta against the same segment of `base`.
    Delta { base: Hash },
}

/// A feature: `Piece` frames of a piece may skip runs of zeros (the next
/// frame's `offset` lies past the end of the last; what is between is
/// zeros), and a piece that ends in zeros ends with an empty frame at
/// the piece's length.
pub const FEATURE_SPARSE_PIECES: &str = "sparse_pieces";
/// The features this node takes, said in its `Hello`.
pub const FEATURES: &[&str] = &[FEATURE_SPARSE_PIECES];

/// Every message of a connection, after the frame is taken off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// First message each way on every connection. `device`: the synced
    /// directory's persistent id, under which the peer remembers how far
    /// it has taken our index.
    Hello {
        version: u32,
        node: NodeId,
        listen_port: u16,
        #[serde(default)]
        device: NodeId,
        /// What the sender can take beyond its protocol version (added
        /// within a version: a node that does not know the field ignores
        /// it, and is sent nothing that needs it). See `FEATURES`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
        /// The newest protocol version the sender speaks (`version` is the
        /// oldest); absent: `version` alone. See `common_version`.
        #[serde(default, skip_serializing_if = "is_zero")]
        newest: u32,
    },
    /// Sent instead of continuing when the peer's hello is unacceptable;
    /// the sender closes the connection after it.
    Refuse { reason: String },
    /// After the hellos, each way: send me your index's changes after
    /// sequence number `since`, as I hold your index `identity` up to it
    /// (`since` 0, or an identity that is no longer yours: all of it).
    IndexRequest { identity: u64, since: u64 },
    /// The answer to `IndexRequest`: the `Index` parts that follow hold the
    /// entries of index `identity` changed after `since` up to `seq` (all
    /// of them when `since` is 0).
    IndexHead { identity: u64, since: u64, seq: u64 },
    /// Part of the entries an `IndexHead` announced; `done` on the last.
    /// Parts are at most `MAX_ENTRIES` entries, and after the first the
    /// next is sent only when asked for (`IndexMore`).
    Index { entries: Vec<Entry>, done: bool },
    /// Send the next part of your index: the receiver has taken in the last
    /// one, so what it has still to fetch stays bounded.
    IndexMore,
    /// Entries that changed on the sender since its index was sent.
    Update { entries: Vec<Entry> },
    /// Please send these files whole.
    Want { files: Vec<WantFile> },
    /// Please send `path` as a delta against my copy, whose hash is `base`;
    /// the payload is my copy's signature (`crate::fs::delta::FileSignature`).
    WantDelta {
        path: RelPath,
        hash: Hash,
        base: Hash,
        #[serde(skip)]
        signature: Vec<u8>,
    },
    /// A file's content follows: `Chunk`s, then `FileEnd`.
    FileStart { entry: Entry, content: ContentMode },
    /// Content bytes (payload only).
    Chunk {
        #[serde(skip)]
        data: Vec<u8>,
    },
    /// The content of the last `FileStart` is complete.
    FileEnd,
    /// Small files whole, many to a frame (protocol 7): each answers the
    /// receiver's `want` of its path, in the version that want named (so
    /// the frame carries no entry: the receiver verifies the content
    /// against the hash it asked for). The payload holds their contents
    /// one after another, `size` bytes each. A file the sender no longer
    /// holds in that version is left out, and `Unavailable` follows.
    Files {
        files: Vec<FileHead>,
        #[serde(skip)]
        contents: Vec<u8>,
    },
    /// The wanted version of `path` is no longer here (changed or deleted
    /// since); an `Update` with the newer entry follows or has been sent.
    Unavailable { path: RelPath },
    /// Keep-alive, sent when nothing else was sent for a while; a
    /// connection that carries nothing for longer is dead.
    Ping,
    /// The sender's tree digest (see `Engine::tree_digest`), sent after
    /// connecting and whenever it changed, at most once a second, so
    /// `dirsync status` can show whether two nodes hold the same tree.
    /// `seq`: every change of the sender's index up to this number has
    /// been sent to this peer (or came from it).
    TreeDigest { digest: Hash, seq: u64 },
    /// The digest descent: please tell me the digests of the children of
    /// folder `dir` (`None`: the root).
    SubtreeQuery { dir: Option<RelPath> },
    /// The answer: each child's name and digest, in name order; `None`
    /// when the folder has more children than `MAX_ENTRIES`.
    Subtree {
        dir: Option<RelPath>,
        children: Option<Vec<ChildDigest>>,
    },
    /// Please send the piece map of `path` in the version with content
    /// `hash` (see `pieces`): a large file is fetched in pieces, from every
    /// peer that holds them.
    PieceMapWant { path: RelPath, hash: Hash },
    /// The piece map: the file is cut in pieces of `piece_size` bytes, and
    /// the payload holds each piece's 32-byte chaining value, in order.
    /// `zeros`: ranges `[first, end)` of pieces whose bytes are all zero
    /// (the holes of a sparse file), which the receiver checks against
    /// their values and makes as holes instead of asking for them. Absent
    /// when there are none; a node that does not know the field ignores it
    /// and asks for every piece.
    PieceMap {
        path: RelPath,
        hash: Hash,
        piece_size: u64,
        #[serde(skip)]
        values: Vec<u8>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        zeros: Vec<(u64, u64)>,
    },
    /// The pieces of `path`'s version `hash` the sender holds while it is
    /// still receiving that file (payload: a bitmap, see `pieces::Bitmap`),
    /// sent again as it grows: it serves those pieces.
    Have {
        path: RelPath,
        hash: Hash,
        #[serde(skip)]
        pieces: Vec<u8>,
    },
    /// Please send piece `index` of `path`'s version `hash`.
    PieceWant { path: RelPath, hash: Hash, index: u64 },
    /// Bytes of piece `index`, from `offset` within the piece (payload). A
    /// piece comes in order, in frames of at most 1 MiB, with nothing of
    /// another piece between them.
    Piece {
        path: RelPath,
        hash: Hash,
        index: u64,
        offset: u64,
        #[serde(skip)]
        data: Vec<u8>,
    },
}

impl Message {
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Refuse { .. } => "refuse",
            Message::IndexRequest { .. } => "index_request",
            Message::IndexHead { .. } => "index_head",
            Message::Index { .. } => "index",
            Message::IndexMore => "index_more",
            Message::Update { .. } => "update",
            Message::Want { .. } => "want",
            Message::WantDelta { .. } => "want_delta",
            Message::FileStart { .. } => "file_start",
            Message::Chunk { .. } => "chunk",
            Message::FileEnd => "file_end",
            Message::Files { .. } => "files",
            Message::Unavailable { .. } => "unavailable",
            Message::Ping => "ping",
            Message::TreeDigest { .. } => "tree_digest",
            Message::SubtreeQuery { .. } => "subtree_query",
            Message::Subtree { .. } => "subtree",
            Message::PieceMapWant { .. } => "piece_map_want",
            Message::PieceMap { .. } => "piece_map",
            Message::Have { .. } => "have",
            Message::PieceWant { .. } => "piece_want",
            Message::Piece { .. } => "piece",
        }
    }

    /// File content (a whole file's or delta's chunk, or a piece's bytes):
    /// what the bandwidth limits count.
    pub fn is_content(&self) -> bool {
        matches!(self, Message::Chunk { .. } | Message::Piece { .. } | Message::Files { .. })
    }

    fn payload(&self) -> &[u8] {
        match self {
            Message::WantDelta { signature, .. } => signature,
            Message::Chunk { data } | Message::Piece { data, .. } => data,
            Message::Files { contents, .. } => contents,
            Message::PieceMap { values, .. } => values,
            Message::Have { pieces, .. } => pieces,
            _ => &[],
        }
    }

    fn set_payload(&mut self, payload: Vec<u8>) -> Result<(), WireError> {
        match self {
            Message::WantDelta { signature, .. } => *signature = payload,
            Message::Chunk { data } | Message::Piece { data, .. } => *data = payload,
            Message::Files { contents, .. } => *contents = payload,
            Message::PieceMap { values, .. } => *values = payload,
            Message::Have { pieces, .. } => *pieces = payload,
            _ if payload.is_empty() => {}
            _ => return Err(WireError::UnexpectedPayload(self.name())),
        }
        Ok(())
    }

    fn check_limits(&self) -> Result<(), WireError> {
        let n = match self {
            Message::Index { entries, .. } | Message::Update { entries } => entries.len(),
            Message::Want { files } => files.len(),
            Message::Files { files, .. } => files.len(),
            Message::Subtree { children: Some(c), .. } => c.len(),
            _ => 0,
        };
        if n > MAX_ENTRIES {
            return Err(WireError::TooManyEntries(n));
        }
        match self {
            Message::Index { entries, .. } | Message::Update { entries } => entries.iter().try_for_each(Entry::check)?,
            Message::FileStart { entry, .. } => entry.check()?,
            Message::Files { files, contents } => {
                let sizes = files.iter().try_fold(0u64, |sum, f| sum.checked_add(f.size));
                if sizes != Some(contents.len() as u64) {
                    return Err(WireError::FilesSizes);
                }
            }
            _ => {}
        }
        if self.payload().len() > MAX_PAYLOAD {
            return Err(WireError::TooLarge(self.payload().len() as u64));
        }
        Ok(())
    }
}

/// A discovery datagram: "node `node` listens for TCP on `port`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// Always "dirsync": tells our datagrams from other traffic on the port.
    pub app: String,
    /// The oldest protocol version the sender speaks (see `Hello`).
    pub version: u32,
    pub node: NodeId,
    pub port: u16,
    /// The newest it speaks; absent: `version` alone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub newest: u32,
    /// With a cluster key: its fingerprint (`ClusterKey::fingerprint`, 16
    /// hex digits), so keyed nodes dial only nodes holding the same key.
    /// Absent without a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Announce {
    pub const APP: &'static str = "dirsync";

    pub fn new(node: NodeId, port: u16) -> Self {
        Announce {
            app: Self::APP.to_string(),
            version: OLDEST_PROTOCOL_VERSION,
            node,
            port,
            newest: PROTOCOL_VERSION,
            key: None,
        }
    }

    /// The same announcement carrying a key fingerprint (or none).
    pub fn with_key(mut self, fingerprint: Option<String>) -> Self {
        self.key = fingerprint;
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(buf: &[u8]) -> Result<Announce, WireError> {
        if buf.len() > MAX_DATAGRAM {
            return Err(WireError::TooLarge(buf.len() as u64));
        }
        let a: Announce = serde_json::from_slice(buf).map_err(|e| WireError::Json(e.to_string()))?;
        if a.app != Self::APP {
            return Err(WireError::Json(format!("not a dirsync announcement: app {:?}", a.app)));
        }
        if a.key
            .as_ref()
            .is_some_and(|k| k.len() != 16 || !k.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(WireError::Json("announcement key fingerprint must be 16 hex digits".into()));
        }
        Ok(a)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(u64),
    #[error("frame body of {0} bytes is too short for its header")]
    Truncated(usize),
    #[error("JSON length {json} does not fit a body of {body} bytes")]
    BadJsonLength { json: usize, body: usize },
    #[error("decompressed message is over {MAX_JSON} bytes")]
    JsonTooLarge,
    #[error("bad zlib data: {0}")]
    Zlib(String),
    #[error("bad message: {0}")]
    Json(String),
    #[error("{0} entries in one message is over the limit")]
    TooManyEntries(usize),
    #[error("message {0} carries no payload, but the frame has one")]
    UnexpectedPayload(&'static str),
    #[error("the sizes of a files message do not add up to its payload")]
    FilesSizes,
    #[error("bad entry for {path}: {why}")]
    BadEntry { path: String, why: &'static str },
}

/// JSON up to this size is stored in zlib's framing without deflating it:
/// deflate gains a few dozen bytes there, and setting it up (zeroing its
/// tables) cost more CPU than everything else in sending a small file.
const STORE_JSON_UP_TO: usize = 512;

/// Encode `msg` as one frame, length prefix included, as every version
/// this node speaks reads it (the handshake, before a version is agreed).
pub fn encode(msg: &Message) -> Vec<u8> {
    encode_in(msg, OLDEST_PROTOCOL_VERSION)
}

/// Encode `msg` as one frame as a peer speaking `version` is written it
/// (from 8 compact, see `dialect`).
pub fn encode_in(msg: &Message, version: u32) -> Vec<u8> {
    let json = dialect::written_in(version, || serde_json::to_vec(msg)).unwrap_or_default();
    let zjson = if json.len() <= STORE_JSON_UP_TO {
        zlib_stored(&json)
    } else {
        let mut z = ZlibEncoder::new(Vec::with_capacity(json.len() / 2 + 16), Compression::default());
        // Writing into a Vec cannot fail.
        let _ = z.write_all(&json);
        z.finish().unwrap_or_default()
    };
    let payload = msg.payload();
    let body_len = 4 + zjson.len() + payload.len();
    let mut out = Vec::with_capacity(LEN_PREFIX + body_len);
    out.extend_from_slice(&(body_len as u64).to_be_bytes());
    out.extend_from_slice(&(zjson.len() as u32).to_be_bytes());
    out.extend_from_slice(&zjson);
    out.extend_from_slice(payload);
    out
}

/// `data` as a zlib stream (RFC 1950) of stored deflate blocks (RFC 1951
/// section 3.2.4), which every zlib decoder reads.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    const MAX_BLOCK: usize = u16::MAX as usize;
    let blocks = data.len().div_ceil(MAX_BLOCK).max(1);
    let mut out = Vec::with_capacity(2 + 5 * blocks + data.len() + 4);
    // CMF: deflate, 32 KiB window; FLG: no dictionary, check bits.
    out.extend_from_slice(&[0x78, 0x01]);
    for i in 0..blocks {
        let block = &data[i * MAX_BLOCK..data.len().min((i + 1) * MAX_BLOCK)];
        let len = block.len() as u16;
        out.push(u8::from(i + 1 == blocks)); // BFINAL, BTYPE 00 (stored)
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler2::adler32_slice(data).to_be_bytes());
    out
}

/// Check a frame's length prefix before reading the body it announces.
pub fn body_len(prefix: [u8; LEN_PREFIX]) -> Result<usize, WireError> {
    let len = u64::from_be_bytes(prefix);
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    Ok(len as usize)
}

/// Decode one frame body (without its length prefix).
pub fn decode_body(mut body: Vec<u8>) -> Result<Message, WireError> {
    if body.len() < 4 {
        return Err(WireError::Truncated(body.len()));
    }
    let json_len = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
    if json_len > body.len() - 4 {
        return Err(WireError::BadJsonLength {
            json: json_len,
            body: body.len(),
        });
    }
    let payload = body.split_off(4 + json_len);
    let mut json = Vec::new();
    ZlibDecoder::new(&body[4..])
        .take(MAX_JSON as u64 + 1)
        .read_to_end(&mut json)
        .map_err(|e| WireError::Zlib(e.to_string()))?;
    if json.len() > MAX_JSON {
        return Err(WireError::JsonTooLarge);
    }
    let mut msg: Message = serde_json::from_slice(&json).map_err(|e| WireError::Json(e.to_string()))?;
    msg.set_payload(payload)?;
    msg.check_limits()?;
    Ok(msg)
}

/// Decode the first frame in `buf`: `Ok(None)` while it is incomplete,
/// otherwise the message and the number of bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let mut p = [0u8; LEN_PREFIX];
    p.copy_from_slice(prefix);
    let len = body_len(p)?;
    let Some(body) = buf.get(LEN_PREFIX..LEN_PREFIX + len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body.to_vec())?, LEN_PREFIX + len)))
}

#[cfg(test)]
mod tests;

/// Entries for tests across the crate: a file of unknown history made at
/// `mtime`, and its tombstone.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Entry, Hash, Kind, NodeId, RelPath, Vector};

    pub fn file(path: &str, mtime: i128, content: &[u8]) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            kind: Kind::File,
            deleted: false,
            size: content.len() as u64,
            mtime,
            version: mtime,
            hash: Hash::of(content),
            vector: Vector::default(),
            by: NodeId(0),
            exec: false,
            mode: 0,
            target: None,
            xattrs: None,
        }
    }

    pub fn link(path: &str, mtime: i128, target: &str) -> Entry {
        Entry {
            kind: Kind::Symlink,
            size: target.len() as u64,
            hash: Hash::of(target.as_bytes()),
            target: Some(target.to_string()),
            ..file(path, mtime, b"")
        }
    }

    pub fn tomb(path: &str, mtime: i128) -> Entry {
        Entry {
            deleted: true,
            size: 0,
            hash: Hash::ZERO,
            ..file(path, mtime, b"")
        }
    }
}
