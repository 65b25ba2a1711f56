//! Prints the size of the futures a publish and an RPC request return: what
//! a caller moves (boxes into `FuturesUnordered`, spawns) per operation.
fn main() {
    let rt = fitz_bench::client_runtime();
    rt.block_on(async {
        let c = fitz::Client::builder("tcp://127.0.0.1:1", fitz::StaticToken::anonymous())
            .build()
            .unwrap();
        let n = c.notice();
        let f = n.publish("notice://a/b/c", bytes::Bytes::new());
        println!("publish future: {} bytes", std::mem::size_of_val(&f));
        let r = c.rpc();
        let f = r.request("rpc://a/b/c", bytes::Bytes::new());
        println!("rpc request future: {} bytes", std::mem::size_of_val(&f));
    });
}
