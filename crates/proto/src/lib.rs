//! weft's wire protocols, generated from `proto/`: `pubapi` (the public, small API:
//! Join with a bootstrap token), `vpnapi` (everything a node does, reachable only
//! through the mesh with a node certificate) and `adminapi` (the admin CLI, with the
//! admin certificate). Open-ended data (facts, variables, task results) travels as
//! JSON in the shapes the rest of weft already uses (`weft.run/v1`).

/// The generated code refers across packages by relative paths, so its modules mirror
/// the proto packages (`weft.pubapi.v1` -> `weft::pubapi::v1`).
mod generated {
    pub mod weft {
        pub mod mesh {
            pub mod v1 {
                tonic::include_proto!("weft.mesh.v1");
            }
        }
        pub mod pubapi {
            pub mod v1 {
                tonic::include_proto!("weft.pubapi.v1");
            }
        }
        pub mod vpnapi {
            pub mod v1 {
                tonic::include_proto!("weft.vpnapi.v1");
            }
        }
        pub mod adminapi {
            pub mod v1 {
                tonic::include_proto!("weft.adminapi.v1");
            }
        }
    }
}

pub mod bootstrap_token;
pub mod codec;
pub mod credentials;
pub mod mesh_peers;
pub mod tls;

pub use generated::weft::adminapi::v1 as adminapi;
pub use generated::weft::mesh::v1 as mesh;
pub use generated::weft::pubapi::v1 as pubapi;
pub use generated::weft::vpnapi::v1 as vpnapi;

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::vpnapi::{node_message, NodeMessage, TaskResult};

    #[test]
    fn messages_round_trip_on_the_wire() {
        let message = NodeMessage {
            kind: Some(node_message::Kind::TaskResult(TaskResult {
                job_id: "j-1".into(),
                step_index: 2,
                sequence: 7,
                result_json: r#"{"status":"changed"}"#.into(),
            })),
        };
        let bytes = message.encode_to_vec();
        assert_eq!(NodeMessage::decode(bytes.as_slice()).unwrap(), message);
    }
}
