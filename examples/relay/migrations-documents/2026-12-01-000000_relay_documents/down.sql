DROP TABLE relay_document_updates;
DROP TABLE relay_documents;
